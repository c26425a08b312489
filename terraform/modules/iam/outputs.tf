output "node_service_account_email" {
  description = "Email of the node pool service account."
  value       = google_service_account.nodes.email
}

output "runtime_service_account_email" {
  description = "Email of the runtime service account; goes into the Kubernetes service account annotation iam.gke.io/gcp-service-account."
  value       = google_service_account.runtime.email
}

output "deploy_service_account_email" {
  description = "Email of the deploy service account (deploy.yml, GitHub environment production)."
  value       = google_service_account.deploy.email
}

output "train_service_account_email" {
  description = "Email of the training service account (train.yml on main, GitHub environment training)."
  value       = google_service_account.train.email
}

output "train_check_service_account_email" {
  description = "Email of the read-only training check service account (train.yml on pull requests)."
  value       = google_service_account.train_check.email
}

output "pipeline_conditions" {
  description = "CEL condition per pipeline (deploy, train, train-check) that a GitHub OIDC token must meet to act as its service account."
  value       = local.pipelines
}

output "workload_identity_provider" {
  description = "Full resource name of the GitHub OIDC provider (projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>), as google-github-actions/auth takes it."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "kubernetes_service_account_member" {
  description = "IAM principal of the chart's Kubernetes service account."
  value       = local.ksa_member
}

output "github_attribute_condition" {
  description = "The CEL condition a GitHub OIDC token must meet to be exchanged."
  value       = google_iam_workload_identity_pool_provider.github.attribute_condition
}
