"""``python -m ffmix.native``: build ffmix's JPEG region decoder now (set-up does this) and say where, or why not.
Exit status 1 when it cannot be built (ffmix then decodes JPEGs whole, as FFCV does, with a warning)."""
import sys

from . import jpeg_region_function, library_path, unavailable_reason

if jpeg_region_function() is None:
    print(f"ffmix.native: {unavailable_reason()}", file=sys.stderr)
    sys.exit(1)
print(f"ffmix.native: JPEG region decoder ready ({library_path()})")
