resource "google_artifact_registry_repository" "docker" {
  #checkov:skip=CKV_GCP_84:Images hold open-source layers and the service's code, no secrets; Google-managed encryption at rest is enough and a KMS key would add cost and a key-loss failure mode.
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  description   = "Pronto server images, pushed by CI and pulled by the GKE nodes."
  format        = "DOCKER"
  mode          = "STANDARD_REPOSITORY"
  labels        = var.labels

  docker_config {
    immutable_tags = var.immutable_tags
  }

  cleanup_policy_dry_run = var.cleanup_dry_run

  # A KEEP policy wins over every DELETE policy, so recent versions survive
  # even when they are older than the retention windows.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_retention_days * 86400}s"
    }
  }

  cleanup_policies {
    id     = "delete-old-tagged"
    action = "DELETE"
    condition {
      tag_state  = "TAGGED"
      older_than = "${var.tagged_retention_days * 86400}s"
    }
  }
}
