output "node_service_account_email" {
  description = "Email of the node pool service account."
  value       = google_service_account.nodes.email
}

output "runtime_service_account_email" {
  description = "Email of the runtime service account; goes into the Kubernetes service account annotation iam.gke.io/gcp-service-account."
  value       = google_service_account.runtime.email
}

output "ci_service_account_email" {
  description = "Email of the CI/CD service account that GitHub Actions impersonates."
  value       = google_service_account.ci.email
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
