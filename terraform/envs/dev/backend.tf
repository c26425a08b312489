# State lives in a versioned GCS bucket created once by hand (see
# docs/infrastructure.md, "Bootstrap"). The bucket is not named here so the
# same code serves any project:
#   terraform init -backend-config="bucket=<project>-tfstate"
terraform {
  backend "gcs" {
    prefix = "pronto/dev"
  }
}
