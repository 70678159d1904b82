output "bucket" {
  description = "The bucket Sluice keeps its objects in."
  value       = aws_s3_bucket.objects.id
}

output "region" {
  description = "The bucket's region (the brokers' --s3-region / AWS_REGION)."
  value       = data.aws_region.current.name
}

output "object_store_url" {
  description = "The brokers' --object-store flag."
  value       = local.prefix == "" ? "s3://${aws_s3_bucket.objects.id}" : "s3://${aws_s3_bucket.objects.id}/${local.prefix}"
}

output "broker_policy_arn" {
  description = "The least-privilege policy the brokers need (attach it to whatever identity they run as)."
  value       = aws_iam_policy.brokers.arn
}

output "broker_role_arn" {
  description = "The IRSA role for the brokers' service account (eks.amazonaws.com/role-arn), if an OIDC provider was given or created."
  value       = local.irsa ? aws_iam_role.brokers[0].arn : null
}

output "eks_cluster_name" {
  description = "The EKS cluster, if created."
  value       = var.create_eks ? aws_eks_cluster.this[0].name : null
}

output "eks_endpoint" {
  description = "The EKS API endpoint, if created."
  value       = var.create_eks ? aws_eks_cluster.this[0].endpoint : null
}
