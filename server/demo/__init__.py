"""The demo shop: its data files and the script that derives them from the Online Retail data."""
