variable "project_id" {
  type        = string
  description = "GCP project that owns the buckets."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Bucket location: a region (same as the cluster: no egress on model loads) or a multi-region such as EU."

  validation {
    condition     = can(regex("^([a-z]+-[a-z]+[0-9]+|US|EU|ASIA)$", var.location))
    error_message = "location must be a region such as europe-west1 or a multi-region (US, EU, ASIA)."
  }
}

variable "dvc_bucket_name" {
  type        = string
  description = "Globally unique name of the bucket holding the DVC remote (training data and model artefacts by content hash)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.dvc_bucket_name)) && !startswith(var.dvc_bucket_name, "goog")
    error_message = "dvc_bucket_name must be 3-63 lowercase letters, digits, hyphens or underscores and must not start with goog."
  }
}

variable "model_bucket_name" {
  type        = string
  description = "Globally unique name of the model registry bucket (<model>/<version>/model.onnx + model.json), read by the server's init container."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.model_bucket_name)) && !startswith(var.model_bucket_name, "goog")
    error_message = "model_bucket_name must be 3-63 lowercase letters, digits, hyphens or underscores and must not start with goog."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Overwritten or deleted object versions are kept this many days, then deleted."
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && var.noncurrent_version_retention_days <= 3650
    error_message = "noncurrent_version_retention_days must be between 1 and 3650."
  }
}

variable "noncurrent_versions_kept" {
  type        = number
  description = "At most this many noncurrent versions of an object are kept, whatever their age."
  default     = 3

  validation {
    condition     = var.noncurrent_versions_kept >= 1
    error_message = "noncurrent_versions_kept must be at least 1, or versioning would protect nothing."
  }
}

variable "dvc_nearline_after_days" {
  type        = number
  description = "DVC cache objects move to NEARLINE storage after this many days (old data set versions are read rarely)."
  default     = 60

  validation {
    condition     = var.dvc_nearline_after_days >= 30
    error_message = "dvc_nearline_after_days must be at least 30: NEARLINE bills a 30-day minimum per object."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Let `terraform destroy` delete non-empty buckets. Keep false anywhere data matters."
  default     = false
}

variable "labels" {
  type        = map(string)
  description = "Labels put on both buckets."
  default     = {}
}
