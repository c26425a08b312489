locals {
  buckets = {
    dvc   = var.dvc_bucket_name
    model = var.model_bucket_name
  }
}

resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (data access logs), which replace usage-log buckets; a second bucket only to hold logs adds cost and nothing to read.
  for_each = local.buckets

  project       = var.project_id
  name          = each.value
  location      = var.location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy
  labels        = merge(var.labels, { "purpose" = each.key })

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 7 * 86400
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  # Only the DVC cache cools down: the model bucket is read on every pod start.
  dynamic "lifecycle_rule" {
    for_each = each.key == "dvc" ? [1] : []
    content {
      condition {
        age                   = var.dvc_nearline_after_days
        matches_storage_class = ["STANDARD"]
        with_state            = "LIVE"
      }
      action {
        type          = "SetStorageClass"
        storage_class = "NEARLINE"
      }
    }
  }
}
