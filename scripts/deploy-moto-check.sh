#!/bin/bash
# deploy/README.md's commands, run with the real AWS CLI (awscli from PyPI) against moto_server on
# loopback: the "Before you start" objects (code buckets, a VPC, a certificate) are made in moto,
# then every stack is deployed in order with `aws cloudformation deploy` and listed.
# Usage: scripts/deploy-moto-check.sh   (after `cargo build`; installs awscli into .venv-awscli)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V=$ROOT/target/debug/vantage
[ -x "$ROOT/.venv-awscli/bin/aws" ] || { python3 -m venv "$ROOT/.venv-awscli" && "$ROOT/.venv-awscli/bin/pip" install -q 'awscli==1.*'; }
AWS=$ROOT/.venv-awscli/bin/aws
MOTO=${VANTAGE_VENV:-$ROOT/.venv}/bin/moto_server
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
W=$(mktemp -d)
$MOTO -H 127.0.0.1 -p $PORT > $W/moto.log 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID; rm -rf "$W"' EXIT
sleep 3
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
E="--endpoint-url http://127.0.0.1:$PORT"
ZONE=$($AWS $E route53 create-hosted-zone --name example.com --caller-reference r1 --query HostedZone.Id --output text | sed 's|/hostedzone/||')
echo "zone $ZONE"
sed "s/Z0123456789ABCDEFGHIJ/$ZONE/" $ROOT/examples/fleet.toml > $W/fleet.toml
cd $W
$V deploy synth --config fleet.toml --out stacks || exit 1
ls stacks
ACCOUNT=123456789012
# Before you start: the code zip in a bucket per Region (moto runs no Lambda: any zip will do).
printf 'x' > bootstrap && python3 -c "import zipfile;z=zipfile.ZipFile('lambda.zip','w');z.write('bootstrap');z.close()"
for r in us-east-1 eu-west-1 ap-southeast-1; do
  if [ $r = us-east-1 ]; then $AWS $E s3api create-bucket --bucket BUCKET-$r --region $r >/dev/null;
  else $AWS $E s3api create-bucket --bucket BUCKET-$r --region $r --create-bucket-configuration LocationConstraint=$r >/dev/null; fi
  $AWS $E s3 cp lambda.zip s3://BUCKET-$r/vantage-lambda-x86_64.zip --region $r >/dev/null
done
VPC=$($AWS $E ec2 create-vpc --cidr-block 10.0.0.0/16 --query Vpc.VpcId --output text)
SA=$($AWS $E ec2 create-subnet --vpc-id $VPC --cidr-block 10.0.1.0/24 --query Subnet.SubnetId --output text)
SB=$($AWS $E ec2 create-subnet --vpc-id $VPC --cidr-block 10.0.2.0/24 --query Subnet.SubnetId --output text)
SG=$($AWS $E ec2 create-security-group --group-name agg --description agg --vpc-id $VPC --query GroupId --output text)
CERT=$($AWS $E acm request-certificate --domain-name aggregator.example.com --query CertificateArn --output text)
echo "vpc $VPC subnets $SA $SB sg $SG"
for r in us-east-1 eu-west-1 ap-southeast-1; do
  $AWS $E cloudformation deploy --region $r --stack-name vantage-orders-api-regional-$r \
    --template-file stacks/vantage-orders-api-regional-$r.json --capabilities CAPABILITY_IAM \
    --parameter-overrides CodeBucket=BUCKET-$r \
      SubnetIds=subnet-a,subnet-b SecurityGroupIds=sg-aurora-clients \
      DatabaseSecretArn=arn:aws:secretsmanager:$r:$ACCOUNT:secret:orders-db \
      CheckedFunction=orders-api CheckedTables=rates; echo "regional $r exit $?"
done
for r in us-east-1 eu-west-1 ap-southeast-1; do
  $AWS $E cloudformation deploy --region $r --stack-name vantage-orders-api-agent-$r \
    --template-file stacks/vantage-orders-api-agent-$r.json --capabilities CAPABILITY_IAM \
    --parameter-overrides CodeBucket=BUCKET-$r \
      AgentKeySecretArn=arn:aws:secretsmanager:$r:$ACCOUNT:secret:vantage-agent-$r; echo "agent $r exit $?"
done
$AWS $E cloudformation deploy --region us-east-1 --stack-name vantage-orders-api-control-us-east-1 \
  --template-file stacks/vantage-orders-api-control-us-east-1.json --capabilities CAPABILITY_NAMED_IAM \
  --parameter-overrides Image=$ACCOUNT.dkr.ecr.us-east-1.amazonaws.com/vantage:1 \
    VpcId=$VPC SubnetIds=$SA,$SB SecurityGroupIds=$SG \
    LoadBalancerSubnetIds=$SA,$SB LoadBalancerSecurityGroupIds=$SG \
    CertificateArn=$CERT \
    AggregatorKeysSecretArn=arn:aws:secretsmanager:us-east-1:$ACCOUNT:secret:vantage-aggregator-keys \
    StateFileSystemId=fs-0123; echo "control exit $?"
$AWS $E cloudformation deploy --region us-east-1 --stack-name vantage-orders-api-routing \
  --template-file stacks/vantage-orders-api-routing.json; echo "routing exit $?"
for s in $($AWS $E cloudformation list-stacks --region us-east-1 --query 'StackSummaries[].[StackName,StackStatus]' --output text | tr '\t' ':'); do echo "us-east-1 $s"; done
for r in eu-west-1 ap-southeast-1; do $AWS $E cloudformation list-stacks --region $r --query 'StackSummaries[].[StackName,StackStatus]' --output text; done
$AWS $E cloudformation describe-stacks --region us-east-1 --stack-name vantage-orders-api-routing --query "length(Stacks[0].Outputs)"
$V deploy outputs --stack vantage-orders-api-routing --region us-east-1 --endpoint-url http://127.0.0.1:$PORT; echo "outputs exit $?"
