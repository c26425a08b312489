variable "project_id" {
  type        = string
  description = "GCP project that owns the repository."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Region of the repository; keep it in the cluster's region so pulls stay regional and free of egress."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.location))
    error_message = "location must be a GCP region such as europe-west1."
  }
}

variable "repository_id" {
  type        = string
  description = "Repository name, the last part of <location>-docker.pkg.dev/<project>/<repository_id>."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.repository_id))
    error_message = "repository_id must be 2-63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "immutable_tags" {
  type        = bool
  description = "Refuse to move a tag once pushed. CI tags images with the commit SHA, so a tag always names one build."
  default     = true
}

variable "keep_recent_versions" {
  type        = number
  description = "The cleanup policy never deletes the most recent N versions of each image, whatever their age (rollback targets)."
  default     = 10

  validation {
    condition     = var.keep_recent_versions >= 1 && var.keep_recent_versions <= 100
    error_message = "keep_recent_versions must be between 1 and 100; 0 would let cleanup delete the image being served."
  }
}

variable "untagged_retention_days" {
  type        = number
  description = "Untagged images (left behind by re-pushes and multi-arch builds) are deleted after this many days."
  default     = 7

  validation {
    condition     = var.untagged_retention_days >= 1
    error_message = "untagged_retention_days must be at least 1."
  }
}

variable "tagged_retention_days" {
  type        = number
  description = "Tagged images older than this are deleted unless they are among the most recent versions kept."
  default     = 90

  validation {
    condition     = var.tagged_retention_days >= 7
    error_message = "tagged_retention_days must be at least 7."
  }
}

variable "cleanup_dry_run" {
  type        = bool
  description = "Only log what the cleanup policies would delete."
  default     = false
}

variable "labels" {
  type        = map(string)
  description = "Labels put on the repository."
  default     = {}
}
