terraform {
  required_version = ">= 1.7.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # Exact pin: the environment gets the provider it was validated with.
      # Modules accept the whole 8.x line.
      version = "8.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = {
    app         = "pronto"
    environment = var.environment
  }
}
