variable "project_id" {
  type        = string
  description = "GCP project to deploy into."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region for the subnet, NAT, Artifact Registry and buckets."
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a GCP region such as europe-west1, not a zone."
  }
}

variable "zone" {
  type        = string
  description = "Zone of the dev cluster. A zonal cluster's control plane falls under the GKE free tier; set it to the region for a regional cluster."
  default     = "europe-west1-b"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+(-[a-z])?$", var.zone))
    error_message = "zone must be a zone (europe-west1-b) or a region (europe-west1)."
  }
}

variable "environment" {
  type        = string
  description = "Environment name, used in resource names and labels."
  default     = "dev"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.environment))
    error_message = "environment must be 2-10 lowercase letters or digits, starting with a letter."
  }
}

variable "github_repository" {
  type        = string
  description = "GitHub repository (owner/name) whose workflows may deploy."

  validation {
    condition     = can(regex("^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must be owner/name, for example my-org/pronto."
  }
}

variable "github_deploy_refs" {
  type        = list(string)
  description = "Git refs deploy.yml may deploy from: the api branch and v* tags. A trailing * matches by prefix. Training identities are fixed: train.yml on main publishes, on pull requests it reads."
  default     = ["refs/heads/api", "refs/tags/v*"]
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "Networks allowed to reach the control plane's IP endpoint (for example the operators' office). Empty by default: GitHub Actions and operators use the DNS endpoint, where IAM (container.clusters.connect) decides access."
  default     = []
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the node subnet."
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for Pods."
  default     = "10.20.0.0/16"
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for Services."
  default     = "10.30.0.0/20"
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "/28 for the control plane's private endpoint."
  default     = "172.16.0.0/28"
}

variable "machine_type" {
  type        = string
  description = "Machine type of the inference node pool."
  default     = "c3-standard-4"
}

variable "spot_nodes" {
  type        = bool
  description = "Use Spot VMs for the node pool (cheap, preemptible; dev only)."
  default     = true
}

variable "node_autoscaling" {
  type = object({
    min_nodes = number
    max_nodes = number
  })
  description = "Bounds of the node pool autoscaler."
  default = {
    min_nodes = 1
    max_nodes = 6
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the cluster from deletion. Set false, apply, then destroy to tear dev down."
  default     = true
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets (their data is lost)."
  default     = false
}

variable "dvc_bucket_name" {
  type        = string
  description = "Name of the DVC remote bucket; empty derives <project>-pronto-<environment>-dvc."
  default     = ""
}

variable "model_bucket_name" {
  type        = string
  description = "Name of the model registry bucket; empty derives <project>-pronto-<environment>-models."
  default     = ""
}

variable "workload_identity_pool_id" {
  type        = string
  description = "ID of the GitHub Workload Identity Federation pool; empty derives pronto-<environment>-github. A destroyed pool's ID stays reserved for 30 days, so set a new one to re-create the environment sooner."
  default     = ""
}
