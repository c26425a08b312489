# Outputs are named for what consumes them: helm_* go into the chart's values,
# dvc_* into .dvc/config, github_* into the repository's Actions variables.
# docs/infrastructure.md maps each one to the exact setting.

output "helm_image_repository" {
  description = "Chart value image.repository: where CI pushes the server image and the nodes pull it from."
  value       = "${module.registry.repository_url}/pronto"
}

output "helm_gcp_service_account" {
  description = "Chart value serviceAccount.gcpServiceAccount: the runtime Google service account, written into the iam.gke.io/gcp-service-account annotation (Workload Identity)."
  value       = module.iam.runtime_service_account_email
}

output "helm_model_registry" {
  description = "Chart value model.registry: gs:// URI of the model bucket; the init container copies <registry>/<model>/<version>/."
  value       = module.storage.model_bucket_url
}

output "helm_values" {
  description = "The three chart values above as a values file: terraform output -json helm_values > gcp-values.json; helm upgrade -f gcp-values.json."
  value = {
    image = {
      repository = "${module.registry.repository_url}/pronto"
    }
    model = {
      registry = module.storage.model_bucket_url
    }
    serviceAccount = {
      name              = "pronto"
      gcpServiceAccount = module.iam.runtime_service_account_email
    }
  }
}

output "dvc_remote_url" {
  description = "DVC remote: dvc remote add -d gcs <this>."
  value       = "${module.storage.dvc_bucket_url}/dvc"
}

output "github_workload_identity_provider" {
  description = "Actions variable GCP_WORKLOAD_IDENTITY_PROVIDER: workload_identity_provider input of google-github-actions/auth."
  value       = module.iam.workload_identity_provider
}

output "github_environment_variables" {
  description = "Per GitHub environment, the Actions variable GCP_SERVICE_ACCOUNT (service_account input of google-github-actions/auth): production (deploy.yml), training (train.yml on main), training-check (train.yml on pull requests)."
  value = {
    production       = { GCP_SERVICE_ACCOUNT = module.iam.deploy_service_account_email }
    training         = { GCP_SERVICE_ACCOUNT = module.iam.train_service_account_email }
    "training-check" = { GCP_SERVICE_ACCOUNT = module.iam.train_check_service_account_email }
  }
}

output "github_pipeline_conditions" {
  description = "The CEL condition per pipeline that a GitHub OIDC token must meet to act as that pipeline's service account."
  value       = module.iam.pipeline_conditions
}

output "github_project_id" {
  description = "Actions variable GCP_PROJECT_ID."
  value       = var.project_id
}

output "github_gke_cluster" {
  description = "Actions variable GKE_CLUSTER: cluster name for get-credentials."
  value       = module.gke.cluster_name
}

output "github_gke_location" {
  description = "Actions variable GKE_LOCATION: zone or region for get-credentials."
  value       = module.gke.location
}

output "github_artifact_registry" {
  description = "Actions variable ARTIFACT_REGISTRY: image path prefix <region>-docker.pkg.dev/<project>/<repository>; the workflow pushes <this>/pronto:<sha>."
  value       = module.registry.repository_url
}

output "github_model_bucket" {
  description = "Actions variable MODEL_BUCKET: bucket the training workflow publishes models to."
  value       = module.storage.model_bucket_name
}

output "github_actions_variables" {
  description = "The repository-level Actions variables at once, for a loop over `gh variable set NAME --body VALUE`; GCP_SERVICE_ACCOUNT is set per environment (github_environment_variables)."
  value = {
    GCP_WORKLOAD_IDENTITY_PROVIDER = module.iam.workload_identity_provider
    RUNTIME_SERVICE_ACCOUNT        = module.iam.runtime_service_account_email
    GCP_PROJECT_ID                 = var.project_id
    GKE_CLUSTER                    = module.gke.cluster_name
    GKE_LOCATION                   = module.gke.location
    ARTIFACT_REGISTRY              = module.registry.repository_url
    MODEL_BUCKET                   = module.storage.model_bucket_name
    DVC_REMOTE_URL                 = "${module.storage.dvc_bucket_url}/dvc"
  }
}
