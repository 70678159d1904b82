# Sluice on AWS: the bucket the brokers keep everything in, the least-privilege
# policy they need, an IRSA role for their Kubernetes service account and,
# optionally, an EKS cluster to run them on.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  bucket  = var.bucket_name != "" ? var.bucket_name : "${var.name}-${data.aws_caller_identity.current.account_id}-${data.aws_region.current.name}"
  prefix  = trim(var.object_prefix, "/")
  objects = local.prefix == "" ? "${aws_s3_bucket.objects.arn}/*" : "${aws_s3_bucket.objects.arn}/${local.prefix}/*"
  kms     = var.kms_key_arn != ""
  # IRSA needs an OIDC provider: the new cluster's, or one passed in.
  irsa     = var.create_eks || var.oidc_provider_arn != ""
  oidc_arn = var.create_eks ? aws_iam_openid_connect_provider.eks[0].arn : var.oidc_provider_arn
  oidc_url = var.create_eks ? replace(aws_eks_cluster.this[0].identity[0].oidc[0].issuer, "https://", "") : var.oidc_provider_url
}

# --- The bucket -------------------------------------------------------------

resource "aws_s3_bucket" "objects" {
  bucket        = local.bucket
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "objects" {
  bucket                  = aws_s3_bucket.objects.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "objects" {
  bucket = aws_s3_bucket.objects.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "objects" {
  bucket = aws_s3_bucket.objects.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.kms ? "aws:kms" : "AES256"
      kms_master_key_id = local.kms ? var.kms_key_arn : null
    }
    bucket_key_enabled = local.kms
  }
}

# Brokers write whole objects; a multipart upload a crashed broker left behind is
# invisible but billed until aborted.
resource "aws_s3_bucket_lifecycle_configuration" "objects" {
  bucket = aws_s3_bucket.objects.id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.objects.arn, "${aws_s3_bucket.objects.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "objects" {
  bucket     = aws_s3_bucket.objects.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.objects]
}

# --- What the brokers may do -------------------------------------------------

# Brokers list, read, write (conditionally: If-None-Match) and delete objects under
# their prefix, nothing else.
data "aws_iam_policy_document" "brokers" {
  statement {
    sid       = "ListThePrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.objects.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.prefix == "" ? ["*"] : [local.prefix, "${local.prefix}/*"]
    }
  }
  statement {
    sid = "ObjectsUnderThePrefix"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.objects]
  }
  dynamic "statement" {
    for_each = local.kms ? [var.kms_key_arn] : []
    content {
      sid       = "EncryptionKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "brokers" {
  name        = "${var.name}-brokers"
  description = "Sluice brokers: objects under s3://${local.bucket}/${local.prefix}"
  policy      = data.aws_iam_policy_document.brokers.json
  tags        = var.tags
}

# IRSA: pods running as the brokers' service account assume this role.
data "aws_iam_policy_document" "irsa" {
  count = local.irsa ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_url}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "brokers" {
  count              = local.irsa ? 1 : 0
  name               = "${var.name}-brokers"
  assume_role_policy = data.aws_iam_policy_document.irsa[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "brokers" {
  count      = local.irsa ? 1 : 0
  role       = aws_iam_role.brokers[0].name
  policy_arn = aws_iam_policy.brokers.arn
}

# --- Optional: an EKS cluster ------------------------------------------------

data "aws_iam_policy_document" "eks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "nodes_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  count              = var.create_eks ? 1 : 0
  name               = "${var.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  count      = var.create_eks ? 1 : 0
  role       = aws_iam_role.cluster[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  count    = var.create_eks ? 1 : 0
  name     = var.name
  version  = var.eks_version
  role_arn = aws_iam_role.cluster[0].arn
  vpc_config {
    subnet_ids = var.subnet_ids
  }
  access_config {
    authentication_mode = "API_AND_CONFIG_MAP"
  }
  tags       = var.tags
  depends_on = [aws_iam_role_policy_attachment.cluster]

  lifecycle {
    precondition {
      condition     = length(var.subnet_ids) >= 2
      error_message = "create_eks needs subnet_ids in at least two availability zones."
    }
  }
}

resource "aws_iam_openid_connect_provider" "eks" {
  count          = var.create_eks ? 1 : 0
  url            = aws_eks_cluster.this[0].identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

resource "aws_iam_role" "nodes" {
  count              = var.create_eks ? 1 : 0
  name               = "${var.name}-eks-nodes"
  assume_role_policy = data.aws_iam_policy_document.nodes_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "nodes" {
  for_each = var.create_eks ? toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
  ]) : toset([])
  role       = aws_iam_role.nodes[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_node_group" "default" {
  count           = var.create_eks ? 1 : 0
  cluster_name    = aws_eks_cluster.this[0].name
  node_group_name = "${var.name}-default"
  node_role_arn   = aws_iam_role.nodes[0].arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.node_instance_types
  scaling_config {
    desired_size = var.node_count.desired
    min_size     = var.node_count.min
    max_size     = var.node_count.max
  }
  update_config {
    max_unavailable = 1
  }
  tags       = var.tags
  depends_on = [aws_iam_role_policy_attachment.nodes]
}
