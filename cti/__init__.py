"""CTI: follows calls over AMI, writes call records, publishes live events."""
