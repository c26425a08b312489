# Values that would hurt are refused at plan time.

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
  project_id = "pronto-test-123"
}

run "control_plane_never_open_to_the_internet" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "net"
    subnet_id            = "subnet"
    pods_range_name      = "pods"
    services_range_name  = "services"
    node_service_account = "nodes@pronto-test-123.iam.gserviceaccount.com"
    master_authorized_networks = [
      { cidr_block = "0.0.0.0/0", display_name = "everyone" },
    ]
  }

  expect_failures = [var.master_authorized_networks]
}

run "shared_core_machine_refused" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "net"
    subnet_id            = "subnet"
    pods_range_name      = "pods"
    services_range_name  = "services"
    node_service_account = "nodes@pronto-test-123.iam.gserviceaccount.com"
    machine_type         = "e2-small"
  }

  expect_failures = [var.machine_type]
}

run "default_compute_service_account_refused" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "net"
    subnet_id            = "subnet"
    pods_range_name      = "pods"
    services_range_name  = "services"
    node_service_account = "123456789-compute@developer.gserviceaccount.com"
  }

  expect_failures = [var.node_service_account]
}

run "release_channel_required" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "net"
    subnet_id            = "subnet"
    pods_range_name      = "pods"
    services_range_name  = "services"
    node_service_account = "nodes@pronto-test-123.iam.gserviceaccount.com"
    release_channel      = "UNSPECIFIED"
  }

  expect_failures = [var.release_channel]
}

run "github_repository_must_be_owner_slash_name" {
  command = plan

  module {
    source = "../../modules/iam"
  }

  variables {
    workload_identity_pool = "pronto-test-123.svc.id.goog"
    model_bucket_name      = "models"
    dvc_bucket_name        = "dvc"
    artifact_registry_repository = {
      location = "europe-west1"
      name     = "pronto"
    }
    github_repository = "*"
  }

  expect_failures = [var.github_repository]
}

run "bucket_names_checked" {
  command = plan

  module {
    source = "../../modules/storage"
  }

  variables {
    location          = "europe-west1"
    dvc_bucket_name   = "Pronto_DVC"
    model_bucket_name = "google-models"
  }

  expect_failures = [var.dvc_bucket_name, var.model_bucket_name]
}

run "every_branch_wildcard_refused" {
  command = plan

  module {
    source = "../../modules/iam"
  }

  variables {
    workload_identity_pool = "pronto-test-123.svc.id.goog"
    model_bucket_name      = "models"
    dvc_bucket_name        = "dvc"
    artifact_registry_repository = {
      location = "europe-west1"
      name     = "pronto"
    }
    github_repository  = "example-org/pronto"
    github_deploy_refs = ["refs/heads/*"]
  }

  expect_failures = [var.github_deploy_refs]
}
