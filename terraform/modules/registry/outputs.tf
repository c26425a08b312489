output "repository_id" {
  description = "Repository name."
  value       = google_artifact_registry_repository.docker.repository_id
}

output "repository_name" {
  description = "Full resource name of the repository, for IAM bindings."
  value       = google_artifact_registry_repository.docker.name
}

output "location" {
  description = "Region of the repository."
  value       = google_artifact_registry_repository.docker.location
}

output "registry_host" {
  description = "Docker registry host for `gcloud auth configure-docker`."
  value       = "${var.location}-docker.pkg.dev"
}

output "repository_url" {
  description = "Image path prefix: <location>-docker.pkg.dev/<project>/<repository>."
  value       = "${var.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.docker.repository_id}"
}
