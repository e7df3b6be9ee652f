"""The chaos campaign (`make chaos`): see `campaign.py`."""
