"""OKX v5 public websocket: books (checksum-verified), trades, tickers.

``feed.OkxFeed`` turns frames into records without I/O; ``connection`` keeps
a live websocket; ``symbols`` maps instrument ids to CCF's common names.
"""
