output "network_id" {
  description = "ID of the VPC (projects/<p>/global/networks/<name>)."
  value       = google_compute_network.vpc.id
}

output "network_name" {
  description = "Name of the VPC."
  value       = google_compute_network.vpc.name
}

output "subnet_id" {
  description = "ID of the node subnet."
  value       = google_compute_subnetwork.nodes.id
}

output "subnet_name" {
  description = "Name of the node subnet."
  value       = google_compute_subnetwork.nodes.name
}

output "pods_range_name" {
  description = "Name of the subnet's secondary range for Pods."
  value       = google_compute_subnetwork.nodes.secondary_ip_range[0].range_name
}

output "services_range_name" {
  description = "Name of the subnet's secondary range for Services."
  value       = google_compute_subnetwork.nodes.secondary_ip_range[1].range_name
}
