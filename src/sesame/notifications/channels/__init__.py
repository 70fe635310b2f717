"""The providers a notification can travel through, each behind the same Channel seam."""
