locals {
  workload_pool = "${var.project_id}.svc.id.goog"
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_12:NetworkPolicy is enforced by Dataplane V2 (datapath_provider = ADVANCED_DATAPATH); the network_policy block configures the Calico add-on, which cannot be combined with it.
  #checkov:skip=CKV_GCP_21:False positive: resource_labels is set from var.labels (plus the provider's default_labels), which checkov cannot evaluate across the module boundary.
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain the project may not have; access is granted per identity instead: no identity holds container.developer; the deploy service account gets only container.clusters.get and container.clusters.connect from IAM and works through a Kubernetes Role in the release namespace (charts/pronto/rbac/deployer-role.yaml).
  #checkov:skip=CKV_GCP_66:Binary Authorization needs attestors and a signing step the delivery pipeline does not have yet; the server image comes from the project's own repository with immutable tags, which only the deploy identity (deploy.yml from api or a v* tag) can push to, and deploy.yml pins the image by digest.
  project  = var.project_id
  name     = var.name
  location = var.location

  node_locations = length(var.node_locations) > 0 ? var.node_locations : null

  deletion_protection = var.deletion_protection

  # The default pool cannot be configured fully; the cluster is created with
  # it and it is removed at once in favour of the managed pool below.
  remove_default_node_pool = true
  initial_node_count       = 1

  network         = var.network_id
  subnetwork      = var.subnet_id
  networking_mode = "VPC_NATIVE"

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block

    master_global_access_config {
      enabled = false
    }
  }

  # Only the listed networks reach the IP endpoints; Google Cloud's public
  # ranges (Cloud Build, other projects' VMs) are not let in by default.
  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false

    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = var.enable_dns_endpoint
    }
  }

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  # Dataplane V2 (eBPF) enforces NetworkPolicy without the Calico add-on.
  datapath_provider = "ADVANCED_DATAPATH"

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  gateway_api_config {
    channel = "CHANNEL_STANDARD"
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]

    managed_prometheus {
      enabled = true
    }
  }

  maintenance_policy {
    daily_maintenance_window {
      start_time = "03:00"
    }
  }

  resource_labels = var.labels

  # Only applies to the short-lived default pool; mirrors the managed pool so
  # that even it never runs with the Compute Engine default account.
  node_config {
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  lifecycle {
    ignore_changes = [node_config]
  }
}

resource "google_container_node_pool" "inference" {
  project  = var.project_id
  name     = "inference"
  location = var.location
  cluster  = google_container_cluster.this.name

  node_locations = length(var.node_locations) > 0 ? var.node_locations : null

  autoscaling {
    min_node_count  = var.autoscaling.min_nodes
    max_node_count  = var.autoscaling.max_nodes
    location_policy = var.spot ? "ANY" : "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type = var.machine_type
    image_type   = "COS_CONTAINERD"
    disk_type    = var.disk_type
    disk_size_gb = var.disk_size_gb
    spot         = var.spot

    # Third-generation machines (C3, C4, N4) need gVNIC; it also raises
    # network throughput on the others.
    gvnic {
      enabled = true
    }

    # Access is decided by IAM on the service account; the broad scope only
    # stops legacy scopes from narrowing it further.
    service_account = var.node_service_account
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    labels = {
      "pronto.dev/pool" = "inference"
    }
    resource_labels = var.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    # Pods get credentials only through Workload Identity, never the node's.
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}
