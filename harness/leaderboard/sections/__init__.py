"""One module per leaderboard section. Each has ``lines(page)`` (or ``lines(page, iou)`` for the sections
repeated per IoU type) returning its markdown lines, nothing when it does not apply; harness.leaderboard.page
puts them in order."""
