"""The 43 GTSRB class names, indexed by class id, their number, and the pairs that are mirror images (the one
place they live)."""

CLASS_NAMES = (
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no overtaking",
    "no overtaking by trucks", "priority at next intersection", "priority road", "give way", "stop",
    "no vehicles", "no trucks", "no entry", "general danger", "dangerous curve left",
    "dangerous curve right", "double curve", "uneven road", "slippery road", "road narrows on the right",
    "road works", "traffic signals", "pedestrians", "children crossing", "bicycles crossing",
    "ice or snow", "wild animals crossing", "end of all restrictions", "turn right ahead", "turn left ahead",
    "ahead only", "go straight or right", "go straight or left", "keep right", "keep left",
    "roundabout", "end of no overtaking", "end of no overtaking by trucks",
)
NUM_CLASSES = len(CLASS_NAMES)
# Pairs of classes each the mirror image of the other (a turn of the sign can take one towards the other):
# dangerous curve left / right, turn right / left ahead, go straight or right / left, keep right / left.
MIRROR_PAIRS = ((19, 20), (33, 34), (36, 37), (38, 39))
