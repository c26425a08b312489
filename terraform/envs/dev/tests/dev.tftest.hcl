# The composed dev environment plans, and its outputs give each consumer
# (Helm chart, DVC, GitHub Actions) what it expects.

# Computed attributes get generated values. OpenTofu generates them at plan
# time too, and random strings fail the provider's own checks on IAM members,
# so the identities that feed those get well-formed ones.
mock_provider "google" {
  mock_resource "google_service_account" {
    defaults = {
      email  = "pronto-mock@pronto-test-123.iam.gserviceaccount.com"
      member = "serviceAccount:pronto-mock@pronto-test-123.iam.gserviceaccount.com"
      name   = "projects/pronto-test-123/serviceAccounts/pronto-mock@pronto-test-123.iam.gserviceaccount.com"
    }
  }

  mock_resource "google_iam_workload_identity_pool" {
    defaults = {
      name = "projects/123456789012/locations/global/workloadIdentityPools/github"
    }
  }
}

variables {
  project_id        = "pronto-test-123"
  github_repository = "example-org/pronto"
}

run "dev_environment_outputs" {
  command = plan

  assert {
    condition     = output.helm_image_repository == "europe-west1-docker.pkg.dev/pronto-test-123/pronto/pronto"
    error_message = "helm_image_repository must be <region>-docker.pkg.dev/<project>/<repo>/pronto."
  }

  assert {
    condition     = output.dvc_remote_url == "gs://pronto-test-123-pronto-dev-dvc/dvc"
    error_message = "dvc_remote_url must point at the dvc/ prefix of the DVC bucket."
  }

  assert {
    condition     = output.helm_model_registry == "gs://pronto-test-123-pronto-dev-models"
    error_message = "helm_model_registry must be the gs:// URI of the model bucket, without a trailing slash."
  }

  assert {
    condition     = output.github_gke_cluster == "pronto-dev" && output.github_gke_location == "europe-west1-b"
    error_message = "The workflow's cluster coordinates must match the cluster."
  }

  assert {
    condition     = output.helm_values.serviceAccount.name == "pronto" && output.helm_values.image.repository == output.helm_image_repository
    error_message = "helm_values must carry the same values as the single outputs."
  }

  assert {
    condition     = module.network.pods_range_name == "pronto-dev-pods" && module.network.services_range_name == "pronto-dev-services"
    error_message = "The cluster must be wired to the network's secondary ranges."
  }

  assert {
    condition     = module.iam.kubernetes_service_account_member == "serviceAccount:pronto-test-123.svc.id.goog[pronto/pronto]"
    error_message = "The runtime identity must be bound to the chart's service account pronto/pronto."
  }

  assert {
    condition     = module.iam.github_attribute_condition == "assertion.repository == 'example-org/pronto' && attribute.pipeline != 'none'"
    error_message = "Only the repository's deploy and training pipelines may authenticate; nothing else."
  }

  assert {
    condition = (
      strcontains(output.github_pipeline_conditions.deploy, "assertion.ref in ['refs/heads/api'] || assertion.ref.startsWith('refs/tags/v')") &&
      strcontains(output.github_pipeline_conditions.train, "train.yml@refs/heads/main")
    )
    error_message = "Deploys come from api or v* tags, publishing training from main only."
  }

  assert {
    condition     = toset(keys(output.github_environment_variables)) == toset(["production", "training", "training-check"])
    error_message = "Each GitHub environment the workflows use gets its own service account."
  }

  assert {
    condition     = toset(keys(output.github_actions_variables)) == toset(["GCP_WORKLOAD_IDENTITY_PROVIDER", "RUNTIME_SERVICE_ACCOUNT", "GCP_PROJECT_ID", "GKE_CLUSTER", "GKE_LOCATION", "ARTIFACT_REGISTRY", "MODEL_BUCKET", "DVC_REMOTE_URL"])
    error_message = "github_actions_variables must carry every variable the workflows read."
  }
}
