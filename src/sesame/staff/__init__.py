"""Staff accounts: platform and partner administrators, site managers and installers."""
