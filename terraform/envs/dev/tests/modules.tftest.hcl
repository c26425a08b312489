# Plan-time checks of each module against a mocked google provider: no
# credentials, no API calls. Run from terraform/envs/dev: terraform test

# Computed attributes get generated values. OpenTofu generates them at plan
# time too, and random strings fail the provider's own checks on IAM members,
# so the identities that feed those get well-formed ones.
mock_provider "google" {
  mock_resource "google_service_account" {
    override_during = plan
    defaults = {
      email  = "pronto-mock@pronto-test-123.iam.gserviceaccount.com"
      member = "serviceAccount:pronto-mock@pronto-test-123.iam.gserviceaccount.com"
      name   = "projects/pronto-test-123/serviceAccounts/pronto-mock@pronto-test-123.iam.gserviceaccount.com"
    }
  }

  mock_resource "google_iam_workload_identity_pool" {
    override_during = plan
    defaults = {
      name = "projects/123456789012/locations/global/workloadIdentityPools/github"
    }
  }
}

variables {
  project_id = "pronto-test-123"
  region     = "europe-west1"
}

run "network_uses_secondary_ranges_and_nat" {
  command = plan

  module {
    source = "../../modules/network"
  }

  variables {
    name          = "pronto-test"
    subnet_cidr   = "10.10.0.0/20"
    pods_cidr     = "10.20.0.0/16"
    services_cidr = "10.30.0.0/20"
  }

  assert {
    condition = toset([for r in google_compute_subnetwork.nodes.secondary_ip_range : r.range_name]) == toset([
      "pronto-test-pods", "pronto-test-services",
    ])
    error_message = "The subnet must carry the Pod and Service secondary ranges."
  }

  assert {
    condition     = google_compute_subnetwork.nodes.private_ip_google_access
    error_message = "Private nodes need Private Google Access to reach Google APIs."
  }

  assert {
    condition     = google_compute_network.vpc.auto_create_subnetworks == false
    error_message = "The VPC must not create default subnets in every region."
  }

  assert {
    condition     = google_compute_router_nat.nat.source_subnetwork_ip_ranges_to_nat == "LIST_OF_SUBNETWORKS"
    error_message = "Cloud NAT must serve only the node subnet."
  }
}

run "gke_is_private_vpc_native_with_workload_identity" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "projects/pronto-test-123/global/networks/pronto-test"
    subnet_id            = "projects/pronto-test-123/regions/europe-west1/subnetworks/pronto-test-europe-west1"
    pods_range_name      = "pronto-test-pods"
    services_range_name  = "pronto-test-services"
    node_service_account = "pronto-test-nodes@pronto-test-123.iam.gserviceaccount.com"
    master_authorized_networks = [
      { cidr_block = "203.0.113.0/24", display_name = "office" },
    ]
  }

  assert {
    condition     = google_container_cluster.this.private_cluster_config[0].enable_private_nodes
    error_message = "Nodes must have no external IP addresses."
  }

  assert {
    condition     = google_container_cluster.this.workload_identity_config[0].workload_pool == "pronto-test-123.svc.id.goog"
    error_message = "Workload Identity must use the project's pool."
  }

  assert {
    condition     = google_container_cluster.this.networking_mode == "VPC_NATIVE"
    error_message = "The cluster must be VPC-native."
  }

  assert {
    condition = (
      google_container_cluster.this.ip_allocation_policy[0].cluster_secondary_range_name == "pronto-test-pods" &&
      google_container_cluster.this.ip_allocation_policy[0].services_secondary_range_name == "pronto-test-services"
    )
    error_message = "Pods and Services must take their IPs from the subnet's secondary ranges."
  }

  assert {
    condition     = google_container_cluster.this.release_channel[0].channel == "REGULAR"
    error_message = "The cluster must follow a release channel."
  }

  assert {
    condition     = google_container_cluster.this.enable_shielded_nodes
    error_message = "Shielded nodes must be on."
  }

  assert {
    condition     = google_container_cluster.this.monitoring_config[0].managed_prometheus[0].enabled
    error_message = "Managed Service for Prometheus must be on."
  }

  assert {
    condition     = google_container_cluster.this.gateway_api_config[0].channel == "CHANNEL_STANDARD"
    error_message = "The Gateway API must be enabled."
  }

  assert {
    condition = (
      [for c in google_container_cluster.this.master_authorized_networks_config[0].cidr_blocks : c.cidr_block] == ["203.0.113.0/24"] &&
      google_container_cluster.this.master_authorized_networks_config[0].gcp_public_cidrs_access_enabled == false
    )
    error_message = "Only the listed networks may reach the control plane."
  }

  assert {
    condition     = google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].allow_external_traffic
    error_message = "The DNS endpoint must be on: deploy.yml (use_dns_based_endpoint) reaches the control plane through it, as no runner address is in the authorized networks."
  }

  assert {
    condition     = google_container_cluster.this.deletion_protection
    error_message = "Deletion protection must default to on."
  }

  assert {
    condition = (
      google_container_node_pool.inference.node_config[0].workload_metadata_config[0].mode == "GKE_METADATA" &&
      google_container_node_pool.inference.node_config[0].shielded_instance_config[0].enable_secure_boot &&
      google_container_node_pool.inference.node_config[0].service_account == "pronto-test-nodes@pronto-test-123.iam.gserviceaccount.com"
    )
    error_message = "Nodes must run shielded, as the dedicated service account, with the metadata server hidden from Pods."
  }

  assert {
    condition = (
      google_container_node_pool.inference.autoscaling[0].min_node_count == 1 &&
      google_container_node_pool.inference.autoscaling[0].max_node_count == 6
    )
    error_message = "The inference pool must autoscale between the configured bounds."
  }
}

run "gke_deletion_protection_can_be_turned_off" {
  command = plan

  module {
    source = "../../modules/gke"
  }

  variables {
    name                 = "pronto-test"
    location             = "europe-west1-b"
    network_id           = "projects/pronto-test-123/global/networks/pronto-test"
    subnet_id            = "projects/pronto-test-123/regions/europe-west1/subnetworks/pronto-test-europe-west1"
    pods_range_name      = "pronto-test-pods"
    services_range_name  = "pronto-test-services"
    node_service_account = "pronto-test-nodes@pronto-test-123.iam.gserviceaccount.com"
    deletion_protection  = false
  }

  assert {
    condition     = google_container_cluster.this.deletion_protection == false
    error_message = "deletion_protection = false must reach the cluster."
  }
}

run "registry_has_cleanup_policies" {
  command = plan

  module {
    source = "../../modules/registry"
  }

  variables {
    location      = "europe-west1"
    repository_id = "pronto"
  }

  assert {
    condition     = google_artifact_registry_repository.docker.format == "DOCKER"
    error_message = "The repository must hold Docker images."
  }

  assert {
    condition = toset([for p in google_artifact_registry_repository.docker.cleanup_policies : p.id]) == toset([
      "keep-recent", "delete-untagged", "delete-old-tagged",
    ])
    error_message = "The repository must carry its cleanup policies."
  }

  assert {
    condition     = google_artifact_registry_repository.docker.docker_config[0].immutable_tags
    error_message = "Tags must be immutable."
  }
}

run "buckets_are_versioned_and_private" {
  command = plan

  module {
    source = "../../modules/storage"
  }

  variables {
    location          = "europe-west1"
    dvc_bucket_name   = "pronto-test-123-dvc"
    model_bucket_name = "pronto-test-123-models"
  }

  assert {
    condition     = alltrue([for b in google_storage_bucket.this : b.versioning[0].enabled])
    error_message = "Every bucket must be versioned."
  }

  assert {
    condition     = alltrue([for b in google_storage_bucket.this : b.uniform_bucket_level_access])
    error_message = "Every bucket must use uniform bucket-level access."
  }

  assert {
    condition     = alltrue([for b in google_storage_bucket.this : b.public_access_prevention == "enforced"])
    error_message = "No bucket may be made public."
  }

  assert {
    condition     = alltrue([for b in google_storage_bucket.this : length(b.lifecycle_rule) >= 3])
    error_message = "Every bucket must expire old versions and abandoned uploads."
  }

  assert {
    condition     = alltrue([for b in google_storage_bucket.this : b.force_destroy == false])
    error_message = "Buckets must not be deletable with their data by default."
  }
}

run "iam_is_least_privilege" {
  command = plan

  module {
    source = "../../modules/iam"
  }

  variables {
    workload_identity_pool = "pronto-test-123.svc.id.goog"
    model_bucket_name      = "pronto-test-123-models"
    dvc_bucket_name        = "pronto-test-123-dvc"
    artifact_registry_repository = {
      location = "europe-west1"
      name     = "pronto"
    }
    github_repository = "example-org/pronto"
  }

  assert {
    condition     = alltrue([for m in google_project_iam_member.project : !contains(["roles/owner", "roles/editor", "roles/viewer"], m.role)])
    error_message = "No primitive role may be granted."
  }

  assert {
    condition     = toset([for m in google_project_iam_member.project : m.role]) == toset(["roles/container.defaultNodeServiceAccount"])
    error_message = "The only predefined project-level grant is the node role; no identity gets container.developer (it reads every Secret)."
  }

  assert {
    condition = (
      toset(google_project_iam_custom_role.cluster_connect.permissions) == toset(["container.clusters.get", "container.clusters.connect"]) &&
      google_project_iam_member.deploy_cluster_connect.member == google_service_account.deploy.member
    )
    error_message = "The deploy identity may find and reach the cluster and nothing more at project level; Kubernetes RBAC scopes it to the release namespace."
  }

  assert {
    condition     = google_service_account_iam_member.runtime_workload_identity.member == "serviceAccount:pronto-test-123.svc.id.goog[pronto/pronto]"
    error_message = "Only the chart's Kubernetes service account (pronto/pronto) may act as the runtime service account."
  }

  assert {
    condition = (
      google_storage_bucket_iam_member.runtime_model_read.role == "roles/storage.objectViewer" &&
      google_storage_bucket_iam_member.runtime_model_read.bucket == "pronto-test-123-models"
    )
    error_message = "The runtime service account reads the model bucket only."
  }

  assert {
    condition = (
      google_storage_bucket_iam_member.runtime_capture_write[0].role == "roles/storage.objectCreator" &&
      google_storage_bucket_iam_member.runtime_capture_write[0].bucket == "pronto-test-123-models" &&
      google_storage_bucket_iam_member.runtime_capture_write[0].condition[0].expression == "resource.name.startsWith(\"projects/_/buckets/pronto-test-123-models/objects/captures/\")"
    )
    error_message = "The runtime service account may only add capture files, under captures/."
  }

  assert {
    condition = (
      google_project_iam_member.runtime_trace_write[0].role == "roles/cloudtrace.agent" &&
      google_project_iam_member.runtime_trace_write[0].member == google_service_account.runtime.member
    )
    error_message = "The runtime service account writes spans to Cloud Trace (the chart's collector runs as it)."
  }

  assert {
    condition = (
      google_artifact_registry_repository_iam_member.deploy_push.role == "roles/artifactregistry.writer" &&
      google_storage_bucket_iam_member.deploy_model_read.role == "roles/storage.objectViewer" &&
      google_storage_bucket_iam_member.deploy_model_read.bucket == "pronto-test-123-models"
    )
    error_message = "Deploy pushes images and reads the model registry; it writes no bucket."
  }

  assert {
    condition = (
      toset([for m in google_storage_bucket_iam_member.train_write : m.bucket]) == toset(["pronto-test-123-dvc", "pronto-test-123-models"]) &&
      alltrue([for m in google_storage_bucket_iam_member.train_write : m.role == "roles/storage.objectUser"]) &&
      alltrue([for m in google_storage_bucket_iam_member.train_check_read : m.role == "roles/storage.objectViewer"])
    )
    error_message = "Training on main writes objects in both buckets with no admin rights; pull-request checks only read them."
  }

  assert {
    condition = (
      endswith(google_service_account_iam_member.deploy_workload_identity.member, "/attribute.pipeline/deploy") &&
      endswith(google_service_account_iam_member.train_workload_identity.member, "/attribute.pipeline/train") &&
      endswith(google_service_account_iam_member.train_check_workload_identity.member, "/attribute.pipeline/train-check") &&
      startswith(google_service_account_iam_member.deploy_workload_identity.member, "principalSet://iam.googleapis.com/")
    )
    error_message = "Each pipeline's tokens may act as that pipeline's service account only."
  }

  assert {
    condition = (
      output.pipeline_conditions.deploy == "assertion.workflow_ref.startsWith('example-org/pronto/.github/workflows/deploy.yml@') && 'environment' in assertion && assertion.environment == 'production' && (assertion.ref in ['refs/heads/api'] || assertion.ref.startsWith('refs/tags/v'))" &&
      output.pipeline_conditions.train == "assertion.workflow_ref == 'example-org/pronto/.github/workflows/train.yml@refs/heads/main' && assertion.event_name in ['push', 'workflow_dispatch', 'repository_dispatch'] && 'environment' in assertion && assertion.environment == 'training'" &&
      output.pipeline_conditions["train-check"] == "assertion.workflow_ref.startsWith('example-org/pronto/.github/workflows/train.yml@refs/pull/') && assertion.event_name == 'pull_request' && 'environment' in assertion && assertion.environment == 'training-check'"
    )
    error_message = "Deploy: deploy.yml in the production environment from api or a v* tag. Train: train.yml on main (merge, manual run or an alert's repository_dispatch). Train check: train.yml on a pull request."
  }

  assert {
    condition = (
      google_iam_workload_identity_pool_provider.github.attribute_condition == "assertion.repository == 'example-org/pronto' && attribute.pipeline != 'none'" &&
      endswith(google_iam_workload_identity_pool_provider.github.attribute_mapping["attribute.pipeline"], " ? 'train-check' : 'none'")
    )
    error_message = "Tokens from other repositories, or from runs that are none of the pipelines, must be refused at the exchange."
  }

  assert {
    condition     = google_iam_workload_identity_pool_provider.github.oidc[0].issuer_uri == "https://token.actions.githubusercontent.com"
    error_message = "The provider must trust GitHub Actions' OIDC issuer."
  }
}
