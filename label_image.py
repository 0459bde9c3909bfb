"""The tutorial's command, run from the repository root: python label_image.py image_name.jpg"""

import sys

from tlcourse.label import main

if __name__ == "__main__":
    sys.exit(main())
