variable "project_id" {
  type        = string
  description = "GCP project that owns the service accounts and the Workload Identity Federation pool."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the service account IDs (<prefix>-nodes, -runtime, -deploy, -train, -train-check)."
  default     = "pronto"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,17}$", var.name_prefix))
    error_message = "name_prefix must be 2-18 lowercase letters, digits or hyphens, starting with a letter, so that <prefix>-train-check fits the 30-character account ID limit."
  }
}

variable "workload_identity_pool" {
  type        = string
  description = "The cluster's Workload Identity pool (<project>.svc.id.goog). Taken from the cluster so that the binding waits for the pool to exist."
}

variable "kubernetes_namespace" {
  type        = string
  description = "Namespace the Helm chart is installed into."
  default     = "pronto"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a DNS-1123 label."
  }
}

variable "kubernetes_service_account" {
  type        = string
  description = "Name of the chart's Kubernetes service account, the only one allowed to act as the runtime service account."
  default     = "pronto"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.kubernetes_service_account))
    error_message = "kubernetes_service_account must be a DNS-1123 subdomain."
  }
}

variable "model_bucket_name" {
  type        = string
  description = "Model registry bucket: the runtime, deploys and pull-request checks read it; training on main writes it."
}

variable "capture_prefix" {
  type        = string
  description = "Prefix of the model bucket where the pods may create capture files (chart server.capture.uploadPrefix); empty grants nothing."
  default     = "captures"

  validation {
    condition     = can(regex("^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", var.capture_prefix))
    error_message = "capture_prefix is a bucket path without leading or trailing slash, or empty."
  }
}

variable "dvc_bucket_name" {
  type        = string
  description = "DVC remote bucket: training on main writes it, pull-request checks read it."
}

variable "artifact_registry_repository" {
  type = object({
    location = string
    name     = string
  })
  description = "Artifact Registry repository (location and repository ID): deploys push to it, the nodes pull from it."
}

variable "github_repository" {
  type        = string
  description = "GitHub repository (owner/name) whose workflows may act as the deploy and training service accounts. Nothing else can."

  validation {
    condition     = can(regex("^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must be owner/name, for example my-org/pronto."
  }
}

variable "github_deploy_refs" {
  type        = list(string)
  description = "Git refs deploy.yml may deploy from (pull requests never can). A trailing * matches by prefix, as in refs/tags/v*."
  default     = ["refs/heads/api", "refs/tags/v*"]

  validation {
    condition     = length(var.github_deploy_refs) > 0 && alltrue([for r in var.github_deploy_refs : can(regex("^refs/(heads|tags)/[A-Za-z0-9._/-]+\\*?$", r))])
    error_message = "github_deploy_refs must list at least one full ref such as refs/heads/api, or a prefix such as refs/tags/v*; refs/heads/* (every branch) is refused."
  }
}

variable "github_deploy_environment" {
  type        = string
  description = "GitHub environment of the deploy job (deploy.yml); its protection rules add reviewers and branch limits."
  default     = "production"
}

variable "github_train_environment" {
  type        = string
  description = "GitHub environment of the publishing training job (train.yml on main)."
  default     = "training"
}

variable "github_train_check_environment" {
  type        = string
  description = "GitHub environment of the pull-request training job (train.yml, read-only)."
  default     = "training-check"
}

variable "workload_identity_pool_id" {
  type        = string
  description = "ID of the Workload Identity Federation pool for GitHub Actions. A deleted pool's ID stays reserved for 30 days, so pick a new one after a teardown."
  default     = "github"

  validation {
    condition     = can(regex("^[a-z0-9-]{4,32}$", var.workload_identity_pool_id)) && !startswith(var.workload_identity_pool_id, "gcp-")
    error_message = "workload_identity_pool_id must be 4-32 lowercase letters, digits or hyphens and must not start with gcp-."
  }
}

variable "cloud_trace" {
  type        = bool
  description = "Let the runtime service account write spans to Cloud Trace (the chart's OpenTelemetry collector, tracing.collector.enabled)."
  default     = true
}
