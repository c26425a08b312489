output "dvc_bucket_name" {
  description = "Name of the DVC remote bucket."
  value       = google_storage_bucket.this["dvc"].name
}

output "model_bucket_name" {
  description = "Name of the model registry bucket."
  value       = google_storage_bucket.this["model"].name
}

output "dvc_bucket_url" {
  description = "gs:// URL of the DVC remote bucket."
  value       = "gs://${google_storage_bucket.this["dvc"].name}"
}

output "model_bucket_url" {
  description = "gs:// URL of the model registry bucket."
  value       = "gs://${google_storage_bucket.this["model"].name}"
}
