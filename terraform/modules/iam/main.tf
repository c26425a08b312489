locals {
  # Every project-level grant to the nodes. Other grants are scoped to a
  # single bucket, repository or service account.
  project_roles = {
    nodes = "roles/container.defaultNodeServiceAccount"
  }
  primitive_roles = ["roles/owner", "roles/editor", "roles/viewer"]

  ksa_member = "serviceAccount:${var.workload_identity_pool}[${var.kubernetes_namespace}/${var.kubernetes_service_account}]"

  workflows = "${var.github_repository}/.github/workflows"

  exact_refs   = [for r in var.github_deploy_refs : r if !endswith(r, "*")]
  ref_prefixes = [for r in var.github_deploy_refs : trimsuffix(r, "*") if endswith(r, "*")]
  deploy_ref_condition = join(" || ", concat(
    length(local.exact_refs) > 0 ? ["assertion.ref in [${join(", ", [for r in local.exact_refs : "'${r}'"])}]"] : [],
    [for p in local.ref_prefixes : "assertion.ref.startsWith('${p}')"],
  ))

  # Which pipeline a GitHub OIDC token speaks for, from the claims GitHub signs: the workflow
  # file and the ref it ran from (workflow_ref), the event and the GitHub environment of the
  # job. Each pipeline has its own service account; a token that matches none is refused.
  # `'environment' in assertion` guards jobs without an environment (the claim is absent).
  pipelines = {
    deploy = join(" && ", [
      "assertion.workflow_ref.startsWith('${local.workflows}/deploy.yml@')",
      "'environment' in assertion && assertion.environment == '${var.github_deploy_environment}'",
      "(${local.deploy_ref_condition})",
    ])
    train = join(" && ", [
      "assertion.workflow_ref == '${local.workflows}/train.yml@refs/heads/main'",
      "assertion.event_name in ['push', 'workflow_dispatch', 'repository_dispatch']",
      "'environment' in assertion && assertion.environment == '${var.github_train_environment}'",
    ])
    train-check = join(" && ", [
      "assertion.workflow_ref.startsWith('${local.workflows}/train.yml@refs/pull/')",
      "assertion.event_name == 'pull_request'",
      "'environment' in assertion && assertion.environment == '${var.github_train_check_environment}'",
    ])
  }
  pipeline_mapping = "${join(" : ", [for k in ["deploy", "train", "train-check"] : "(${local.pipelines[k]}) ? '${k}'"])} : 'none'"

  pipeline_principals = {
    for k in keys(local.pipelines) :
    k => "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.pipeline/${k}"
  }
}

# --- GKE nodes: write logs and metrics, pull images. -----------------------

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-nodes"
  display_name = "Pronto GKE nodes"
  description  = "Node pool identity: logs, metrics, image pulls. Pods never see it (GKE_METADATA)."
}

resource "google_project_iam_member" "project" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value
  member  = google_service_account.nodes.member

  lifecycle {
    precondition {
      condition     = !contains(local.primitive_roles, each.value)
      error_message = "Primitive roles (owner, editor, viewer) are never granted."
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  project    = var.project_id
  location   = var.artifact_registry_repository.location
  repository = var.artifact_registry_repository.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.nodes.member
}

# --- Runtime: the server's pods, through Workload Identity. ----------------

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-runtime"
  display_name = "Pronto server runtime"
  description  = "Impersonated by the pronto Kubernetes service account; reads the model bucket and adds capture files under one prefix."
}

resource "google_service_account_iam_member" "runtime_workload_identity" {
  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.ksa_member
}

resource "google_storage_bucket_iam_member" "runtime_model_read" {
  bucket = var.model_bucket_name
  role   = "roles/storage.objectViewer"
  member = google_service_account.runtime.member
}

# Captured payloads (chart server.capture.upload): the pods create objects under one prefix
# of the model bucket and nowhere else; objectCreator cannot overwrite or delete.
resource "google_storage_bucket_iam_member" "runtime_capture_write" {
  count  = var.capture_prefix == "" ? 0 : 1
  bucket = var.model_bucket_name
  role   = "roles/storage.objectCreator"
  member = google_service_account.runtime.member

  condition {
    title       = "pronto-captures-only"
    description = "Capture files under ${var.capture_prefix}/ only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.model_bucket_name}/objects/${var.capture_prefix}/\")"
  }
}

# Traces (chart tracing.collector): the collector runs as the release's service account and
# writes spans to Cloud Trace, a project-level API with no narrower resource to grant on.
resource "google_project_iam_member" "runtime_trace_write" {
  count   = var.cloud_trace ? 1 : 0
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = google_service_account.runtime.member
}

# --- GitHub Actions through Workload Identity Federation. -------------------
# Three identities, one per pipeline, none with a key: GitHub OIDC tokens are exchanged for
# short-lived credentials, and the token's claims decide which account it may act as.

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "GitHub Actions"
  description               = "OIDC tokens from GitHub Actions workflows of ${var.github_repository}."
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins the repository, the workflow file, the ref, the event and the GitHub environment through their own claims, which is what the check wants from assertion.sub; sub changes shape (repo:o/r:environment:x) when a job uses a GitHub environment.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-actions"
  display_name                       = "GitHub Actions OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
    "attribute.actor"      = "assertion.actor"
    "attribute.pipeline"   = local.pipeline_mapping
  }

  # Tokens from any other repository, or from a workflow run that is none of the three
  # pipelines, are refused at the token exchange, before any IAM binding is looked at.
  attribute_condition = "assertion.repository == '${var.github_repository}' && attribute.pipeline != 'none'"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

# Deploy: push the image, read the model registry, reach the cluster. What it may do inside
# the cluster is Kubernetes RBAC, bound to this account in the release namespace only
# (charts/pronto/rbac/deployer-role.yaml).
resource "google_service_account" "deploy" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-deploy"
  display_name = "Pronto deploy (GitHub Actions deploy.yml)"
  description  = "Pushes server images and runs helm upgrade in the release namespace. Only deploy.yml jobs in the production environment can act as it."
}

# container.clusters.get for get-credentials and container.clusters.connect for the DNS
# endpoint; no Kubernetes object permission (container.developer would read every Secret).
resource "google_project_iam_custom_role" "cluster_connect" {
  project     = var.project_id
  role_id     = replace("${var.name_prefix}_cluster_connect", "-", "_")
  title       = "Pronto: connect to GKE clusters"
  description = "Find a cluster and reach its control plane; Kubernetes RBAC decides the rest."
  permissions = ["container.clusters.get", "container.clusters.connect"]
}

resource "google_project_iam_member" "deploy_cluster_connect" {
  project = var.project_id
  role    = google_project_iam_custom_role.cluster_connect.name
  member  = google_service_account.deploy.member
}

resource "google_service_account_iam_member" "deploy_workload_identity" {
  service_account_id = google_service_account.deploy.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.pipeline_principals["deploy"]
}

resource "google_artifact_registry_repository_iam_member" "deploy_push" {
  project    = var.project_id
  location   = var.artifact_registry_repository.location
  repository = var.artifact_registry_repository.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deploy.member
}

resource "google_storage_bucket_iam_member" "deploy_model_read" {
  bucket = var.model_bucket_name
  role   = "roles/storage.objectViewer"
  member = google_service_account.deploy.member
}

# Train: merges to main reproduce the pipeline, push DVC data and publish model versions.
resource "google_service_account" "train" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-train"
  display_name = "Pronto training (GitHub Actions train.yml on main)"
  description  = "Writes the DVC remote and publishes model versions. Only train.yml on main, in the training environment, can act as it."
}

resource "google_service_account_iam_member" "train_workload_identity" {
  service_account_id = google_service_account.train.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.pipeline_principals["train"]
}

# objectUser: read, create, overwrite and delete objects; no bucket settings,
# no IAM. DVC needs all four on its cache; publishing moves LATEST.
resource "google_storage_bucket_iam_member" "train_write" {
  for_each = {
    dvc   = var.dvc_bucket_name
    model = var.model_bucket_name
  }

  bucket = each.value
  role   = "roles/storage.objectUser"
  member = google_service_account.train.member
}

# Train check: pull requests reproduce the pipeline and compare with production, read-only.
resource "google_service_account" "train_check" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-train-check"
  display_name = "Pronto training check (GitHub Actions train.yml on pull requests)"
  description  = "Reads the DVC remote and the model registry. Pull requests run their own code, so this account can write nothing."
}

resource "google_service_account_iam_member" "train_check_workload_identity" {
  service_account_id = google_service_account.train_check.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.pipeline_principals["train-check"]
}

resource "google_storage_bucket_iam_member" "train_check_read" {
  for_each = {
    dvc   = var.dvc_bucket_name
    model = var.model_bucket_name
  }

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = google_service_account.train_check.member
}
