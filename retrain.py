"""The tutorial's command, run from the repository root: python retrain.py --image_dir=Dataset_Name ..."""

import sys

from tlcourse.retrain import main

if __name__ == "__main__":
    sys.exit(main())
