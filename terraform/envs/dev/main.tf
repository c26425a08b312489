locals {
  name   = "pronto-${var.environment}"
  labels = { app = "pronto", environment = var.environment }

  dvc_bucket   = var.dvc_bucket_name != "" ? var.dvc_bucket_name : "${var.project_id}-${local.name}-dvc"
  model_bucket = var.model_bucket_name != "" ? var.model_bucket_name : "${var.project_id}-${local.name}-models"

  services = toset([
    "artifactregistry.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
  ])
}

resource "google_project_service" "this" {
  for_each = local.services

  project = var.project_id
  service = each.value

  # Other workloads in the project may use the same APIs; destroying this
  # environment must not switch them off.
  disable_on_destroy = false
}

module "network" {
  source = "../../modules/network"

  project_id    = var.project_id
  region        = var.region
  name          = local.name
  subnet_cidr   = var.subnet_cidr
  pods_cidr     = var.pods_cidr
  services_cidr = var.services_cidr

  depends_on = [google_project_service.this]
}

module "registry" {
  source = "../../modules/registry"

  project_id    = var.project_id
  location      = var.region
  repository_id = "pronto"
  labels        = local.labels

  depends_on = [google_project_service.this]
}

module "storage" {
  source = "../../modules/storage"

  project_id        = var.project_id
  location          = var.region
  dvc_bucket_name   = local.dvc_bucket
  model_bucket_name = local.model_bucket
  force_destroy     = var.force_destroy_buckets
  labels            = local.labels

  depends_on = [google_project_service.this]
}

module "gke" {
  source = "../../modules/gke"

  project_id             = var.project_id
  name                   = local.name
  location               = var.zone
  network_id             = module.network.network_id
  subnet_id              = module.network.subnet_id
  pods_range_name        = module.network.pods_range_name
  services_range_name    = module.network.services_range_name
  master_ipv4_cidr_block = var.master_ipv4_cidr_block

  master_authorized_networks = var.master_authorized_networks
  release_channel            = "REGULAR"
  deletion_protection        = var.deletion_protection

  node_service_account = module.iam.node_service_account_email
  machine_type         = var.machine_type
  spot                 = var.spot_nodes
  autoscaling          = var.node_autoscaling
  labels               = local.labels

  depends_on = [google_project_service.this]
}

module "iam" {
  source = "../../modules/iam"

  project_id             = var.project_id
  name_prefix            = local.name
  workload_identity_pool = module.gke.workload_identity_pool

  kubernetes_namespace       = "pronto"
  kubernetes_service_account = "pronto"

  model_bucket_name = module.storage.model_bucket_name
  dvc_bucket_name   = module.storage.dvc_bucket_name
  artifact_registry_repository = {
    location = module.registry.location
    name     = module.registry.repository_id
  }

  github_repository         = var.github_repository
  github_deploy_refs        = var.github_deploy_refs
  workload_identity_pool_id = var.workload_identity_pool_id != "" ? var.workload_identity_pool_id : "${local.name}-github"

  depends_on = [google_project_service.this]
}
