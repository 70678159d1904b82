variable "name" {
  description = "Name of this Sluice cluster: prefixes every resource, and is the default bucket name suffix."
  type        = string
  default     = "sluice"
}

variable "bucket_name" {
  description = "S3 bucket for Sluice's objects (write-ahead objects, segments, the Parquet lake). Empty: <name>-<account id>-<region>."
  type        = string
  default     = ""
}

variable "object_prefix" {
  description = "Key prefix inside the bucket; brokers run with --object-store=s3://<bucket>/<prefix>."
  type        = string
  default     = "sluice"
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption; empty: SSE-S3 (AES256)."
  type        = string
  default     = ""
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts multipart uploads a crashed broker left behind."
  type        = number
  default     = 1
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects (tests only)."
  type        = bool
  default     = false
}

variable "create_eks" {
  description = "Also create an EKS cluster with one managed node group (and the OIDC provider IRSA needs)."
  type        = bool
  default     = false
}

variable "eks_version" {
  description = "Kubernetes version of the EKS cluster."
  type        = string
  default     = "1.31"
}

variable "subnet_ids" {
  description = "Subnets for the EKS cluster and its nodes (at least two availability zones). Required with create_eks."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the EKS node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_count" {
  description = "Desired, minimum and maximum nodes of the EKS node group."
  type = object({
    desired = number
    min     = number
    max     = number
  })
  default = {
    desired = 3
    min     = 3
    max     = 6
  }
}

variable "oidc_provider_arn" {
  description = "IAM OIDC provider of an existing cluster, for IRSA (ignored with create_eks, which makes its own)."
  type        = string
  default     = ""
}

variable "oidc_provider_url" {
  description = "Issuer URL of that OIDC provider, without https:// (e.g. oidc.eks.eu-west-1.amazonaws.com/id/ABC)."
  type        = string
  default     = ""
}

variable "namespace" {
  description = "Kubernetes namespace of the brokers' service account."
  type        = string
  default     = "sluice"
}

variable "service_account" {
  description = "Kubernetes service account the brokers run as (the k8s base's is `sluice`)."
  type        = string
  default     = "sluice"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
