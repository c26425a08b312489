variable "project_id" {
  type        = string
  description = "GCP project that owns the cluster; also names the Workload Identity pool (<project>.svc.id.goog)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "name" {
  type        = string
  description = "Cluster name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,38}[a-z0-9]$", var.name))
    error_message = "name must be 2-40 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "A zone (zonal cluster: one control plane, covered by the GKE free tier) or a region (regional cluster: control plane in three zones, billed)."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+(-[a-z])?$", var.location))
    error_message = "location must be a GCP region (europe-west1) or zone (europe-west1-b)."
  }
}

variable "node_locations" {
  type        = list(string)
  description = "Zones for the nodes. Empty keeps GKE's default: the cluster's zone, or every zone of its region."
  default     = []

  validation {
    condition     = alltrue([for z in var.node_locations : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", z))])
    error_message = "node_locations must be zones such as europe-west1-b."
  }
}

variable "network_id" {
  type        = string
  description = "ID of the VPC the cluster joins."
}

variable "subnet_id" {
  type        = string
  description = "ID of the subnet holding the nodes; it must carry the Pod and Service secondary ranges."
}

variable "pods_range_name" {
  type        = string
  description = "Name of the subnet's secondary range for Pod IPs."
}

variable "services_range_name" {
  type        = string
  description = "Name of the subnet's secondary range for Service IPs."
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "/28 range for the control plane's private endpoint. It must not overlap any range in the VPC or its peers."
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr_block, 0)) && endswith(var.master_ipv4_cidr_block, "/28")
    error_message = "master_ipv4_cidr_block must be an IPv4 /28 block."
  }
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "Networks allowed to reach the control plane's IP endpoints (for example an office or a bastion). The subnet is always allowed on the private endpoint. Automation reaches the cluster through the IAM-checked DNS endpoint instead."
  default     = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0))])
    error_message = "Every master_authorized_networks cidr_block must be an IPv4 CIDR block."
  }

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : tonumber(split("/", n.cidr_block)[1]) >= 8])
    error_message = "master_authorized_networks must not open the control plane to the internet (no block larger than /8, in particular no 0.0.0.0/0)."
  }
}

variable "enable_dns_endpoint" {
  type        = bool
  description = "Expose the control plane's DNS endpoint, reachable from anywhere but authorised by IAM on every request. GitHub-hosted runners have no fixed IPs, so the deploy workflow uses this endpoint."
  default     = true
}

variable "release_channel" {
  type        = string
  description = "GKE release channel: RAPID, REGULAR, STABLE or EXTENDED. Versions and upgrades follow the channel."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE", "EXTENDED"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR, STABLE or EXTENDED (UNSPECIFIED would leave upgrades unmanaged)."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse `terraform destroy` and replacement of the cluster. Turn off only to tear an environment down."
  default     = true
}

variable "node_service_account" {
  type        = string
  description = "Email of the least-privilege service account the nodes run as (never the Compute Engine default account)."

  validation {
    condition     = can(regex("@[a-z0-9-]+\\.iam\\.gserviceaccount\\.com$", var.node_service_account))
    error_message = "node_service_account must be a user-managed service account email (...@<project>.iam.gserviceaccount.com)."
  }
}

variable "machine_type" {
  type        = string
  description = "Node machine type. The server runs one ONNX Runtime worker process per core and is bound by per-request CPU cost, so compute-optimized or general-purpose families with dedicated cores fit; shared-core and accelerator types do not."
  default     = "c3-standard-4"

  validation {
    condition     = can(regex("^(c2|c2d|c3|c3d|c4|c4a|c4d|n2|n2d|n4|t2d|e2)-(standard|highcpu|highmem)-[0-9]+(-lssd)?$", var.machine_type))
    error_message = "machine_type must be a dedicated-core CPU type such as c3-standard-4, n2-standard-4 or e2-standard-4 (no shared-core e2-micro/small/medium, no GPU types)."
  }
}

variable "disk_type" {
  type        = string
  description = "Boot disk type. C3 and N2 take pd-balanced; C4 and N4 need hyperdisk-balanced."
  default     = "pd-balanced"

  validation {
    condition     = contains(["pd-balanced", "pd-ssd", "hyperdisk-balanced"], var.disk_type)
    error_message = "disk_type must be pd-balanced, pd-ssd or hyperdisk-balanced."
  }
}

variable "disk_size_gb" {
  type        = number
  description = "Boot disk size in GB per node."
  default     = 50

  validation {
    condition     = var.disk_size_gb >= 20 && var.disk_size_gb <= 500
    error_message = "disk_size_gb must be between 20 and 500."
  }
}

variable "spot" {
  type        = bool
  description = "Run nodes as Spot VMs (about 60-90% cheaper, may be reclaimed at any time). Fine for dev, not for a serving SLO."
  default     = false
}

variable "autoscaling" {
  type = object({
    min_nodes = number
    max_nodes = number
  })
  description = "Node pool autoscaling bounds, per zone of the node pool."
  default = {
    min_nodes = 1
    max_nodes = 6
  }

  validation {
    condition     = var.autoscaling.min_nodes >= 0 && var.autoscaling.max_nodes >= 1 && var.autoscaling.min_nodes <= var.autoscaling.max_nodes
    error_message = "autoscaling needs 0 <= min_nodes <= max_nodes and max_nodes >= 1."
  }

  validation {
    condition     = var.autoscaling.max_nodes <= 20
    error_message = "autoscaling.max_nodes above 20 is a cost hazard for this service; raise the limit here deliberately."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels put on the cluster and its nodes (cost attribution)."
  default     = {}
}
