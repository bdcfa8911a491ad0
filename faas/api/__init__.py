"""The Lambda REST API (2015-03-31) that boto3 and the AWS CLI talk to."""
