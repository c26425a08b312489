variable "project_id" {
  type        = string
  description = "GCP project that owns the network."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the subnet, Cloud Router and Cloud NAT (for example europe-west1)."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a GCP region such as europe-west1, not a zone."
  }
}

variable "name" {
  type        = string
  description = "Name prefix for the VPC, subnet, router and NAT."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,40}[a-z0-9]$", var.name))
    error_message = "name must be 2-42 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the subnet; node IPs come from here."

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && tonumber(split("/", var.subnet_cidr)[1]) <= 24
    error_message = "subnet_cidr must be an IPv4 CIDR block of /24 or larger."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for Pod IPs (VPC-native alias IPs). GKE gives each node a /24 by default, so /16 fits about 256 nodes."

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0)) && tonumber(split("/", var.pods_cidr)[1]) <= 21
    error_message = "pods_cidr must be an IPv4 CIDR block of /21 or larger (a /21 already limits the cluster to 8 nodes)."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for ClusterIP Service IPs."

  validation {
    condition     = can(cidrhost(var.services_cidr, 0)) && tonumber(split("/", var.services_cidr)[1]) <= 27
    error_message = "services_cidr must be an IPv4 CIDR block of /27 or larger."
  }
}

variable "nat_log_filter" {
  type        = string
  description = "Which Cloud NAT events are logged: ERRORS_ONLY, TRANSLATIONS_ONLY or ALL."
  default     = "ERRORS_ONLY"

  validation {
    condition     = contains(["ERRORS_ONLY", "TRANSLATIONS_ONLY", "ALL"], var.nat_log_filter)
    error_message = "nat_log_filter must be ERRORS_ONLY, TRANSLATIONS_ONLY or ALL."
  }
}

variable "flow_log_sampling" {
  type        = number
  description = "Fraction of VPC flow logs kept on the subnet (0 < x <= 1). Flow logs are billed per GB, so dev keeps a small sample."
  default     = 0.1

  validation {
    condition     = var.flow_log_sampling > 0 && var.flow_log_sampling <= 1
    error_message = "flow_log_sampling must be greater than 0 and at most 1."
  }
}
