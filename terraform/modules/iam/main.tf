locals {
  # Every project-level grant this module makes. Anything else is scoped to a
  # single bucket, repository or service account.
  project_roles = {
    nodes = "roles/container.defaultNodeServiceAccount"
    ci    = "roles/container.developer"
  }
  primitive_roles = ["roles/owner", "roles/editor", "roles/viewer"]

  ksa_member = "serviceAccount:${var.workload_identity_pool}[${var.kubernetes_namespace}/${var.kubernetes_service_account}]"

  exact_refs   = [for r in var.github_allowed_refs : r if !endswith(r, "*")]
  ref_prefixes = [for r in var.github_allowed_refs : trimsuffix(r, "*") if endswith(r, "*")]
  ref_condition = join(" || ", concat(
    length(local.exact_refs) > 0 ? ["assertion.ref in [${join(", ", [for r in local.exact_refs : "'${r}'"])}]"] : [],
    [for p in local.ref_prefixes : "assertion.ref.startsWith('${p}')"],
  ))
  ci_principals = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
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
  member  = each.key == "nodes" ? google_service_account.nodes.member : google_service_account.ci.member

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
  description  = "Impersonated by the pronto Kubernetes service account; reads the model bucket and nothing else."
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

# --- CI/CD: GitHub Actions through Workload Identity Federation. -----------

resource "google_service_account" "ci" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-ci"
  display_name = "Pronto CI/CD (GitHub Actions)"
  description  = "Pushes images, deploys to the cluster, writes the DVC and model buckets. No key exists; GitHub OIDC tokens are exchanged for short-lived credentials."
}

resource "google_iam_workload_identity_pool" "github" {
  project                   = var.project_id
  workload_identity_pool_id = var.workload_identity_pool_id
  display_name              = "GitHub Actions"
  description               = "OIDC tokens from GitHub Actions workflows of ${var.github_repository}."
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins the repository and the refs through their own claims, which is what the check wants from assertion.sub; sub changes shape (repo:o/r:environment:x) when a job uses a GitHub environment, so matching it would lock out protected deploy jobs.
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github-actions"
  display_name                       = "GitHub Actions OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
    "attribute.actor"      = "assertion.actor"
  }

  # Tokens from any other repository, or from a ref not listed, are refused
  # at the token exchange, before any IAM binding is looked at.
  attribute_condition = "assertion.repository == '${var.github_repository}' && (${local.ref_condition})"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account_iam_member" "ci_workload_identity" {
  service_account_id = google_service_account.ci.name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.ci_principals
}

resource "google_artifact_registry_repository_iam_member" "ci_push" {
  project    = var.project_id
  location   = var.artifact_registry_repository.location
  repository = var.artifact_registry_repository.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.ci.member
}

# objectUser: read, create, overwrite and delete objects; no bucket settings,
# no IAM. DVC needs all four on its cache; training publishes models.
resource "google_storage_bucket_iam_member" "ci_write" {
  for_each = {
    dvc   = var.dvc_bucket_name
    model = var.model_bucket_name
  }

  bucket = each.value
  role   = "roles/storage.objectUser"
  member = google_service_account.ci.member
}
