"""DATA: exchange collectors, the replay exchange and the recorder."""
