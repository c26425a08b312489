output "cluster_name" {
  description = "Name of the cluster."
  value       = google_container_cluster.this.name
}

output "location" {
  description = "Zone or region of the cluster (what `gcloud container clusters get-credentials --location` takes)."
  value       = google_container_cluster.this.location
}

output "cluster_id" {
  description = "Full resource ID of the cluster."
  value       = google_container_cluster.this.id
}

output "workload_identity_pool" {
  description = "Workload Identity pool of the cluster (<project>.svc.id.goog); Kubernetes service accounts appear in IAM as serviceAccount:<pool>[<namespace>/<name>]."
  value       = google_container_cluster.this.workload_identity_config[0].workload_pool
}

output "dns_endpoint" {
  description = "The control plane's DNS endpoint, used with `gcloud container clusters get-credentials --dns-endpoint`."
  value       = try(google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint, null)
}

output "node_pool_name" {
  description = "Name of the autoscaling inference node pool."
  value       = google_container_node_pool.inference.name
}
