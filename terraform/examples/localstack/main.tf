# The same module against LocalStack on this host (tests/run.sh applies and
# destroys it when LocalStack runs): the bucket with its encryption, public-access
# block, lifecycle and TLS-only policy, and the brokers' policy. No EKS, no IRSA.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

variable "endpoint" {
  description = "LocalStack's edge endpoint."
  type        = string
  default     = "http://127.0.0.1:4566"
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  s3_use_path_style           = true
  endpoints {
    s3  = var.endpoint
    iam = var.endpoint
    sts = var.endpoint
  }
}

module "sluice" {
  source        = "../../modules/sluice"
  name          = "sluice-tf-test"
  bucket_name   = "sluice-tf-test"
  force_destroy = true
}

output "object_store_url" {
  value = module.sluice.object_store_url
}

output "broker_policy_arn" {
  value = module.sluice.broker_policy_arn
}
