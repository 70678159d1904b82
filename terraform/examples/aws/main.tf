# An AWS deployment of Sluice: the bucket, the brokers' IRSA role and (optionally)
# an EKS cluster. Its outputs feed the k8s `aws` overlay:
#
#   terraform output -raw kustomize_env > ../../../k8s/overlays/aws/sluice.env
#   kubectl apply -k ../../../k8s/overlays/aws

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 6.0"
    }
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the Sluice cluster."
  type        = string
  default     = "sluice"
}

variable "create_eks" {
  description = "Create an EKS cluster too (needs subnet_ids)."
  type        = bool
  default     = false
}

variable "subnet_ids" {
  description = "Subnets for EKS, in at least two availability zones."
  type        = list(string)
  default     = []
}

variable "oidc_provider_arn" {
  description = "OIDC provider of an existing EKS cluster, for IRSA (when not creating one)."
  type        = string
  default     = ""
}

variable "oidc_provider_url" {
  description = "Its issuer URL without https://."
  type        = string
  default     = ""
}

provider "aws" {
  region = var.region
}

module "sluice" {
  source            = "../../modules/sluice"
  name              = var.name
  create_eks        = var.create_eks
  subnet_ids        = var.subnet_ids
  oidc_provider_arn = var.oidc_provider_arn
  oidc_provider_url = var.oidc_provider_url
  tags = {
    "app.kubernetes.io/part-of" = "sluice"
  }
}

output "object_store_url" {
  value = module.sluice.object_store_url
}

output "region" {
  value = module.sluice.region
}

output "broker_role_arn" {
  value = module.sluice.broker_role_arn
}

output "eks_cluster_name" {
  value = module.sluice.eks_cluster_name
}

# The k8s `aws` overlay reads these (configMapGenerator env file).
output "kustomize_env" {
  value = join("\n", [
    "SLUICE_OBJECT_STORE=${module.sluice.object_store_url}",
    "AWS_REGION=${module.sluice.region}",
    "BROKER_ROLE_ARN=${coalesce(module.sluice.broker_role_arn, "none")}",
    "",
  ])
}
