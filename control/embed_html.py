#!/usr/bin/env python3
"""embed_html.py IN OUT - writes IN (the dashboard page) as a C byte array
header, so flashsale-control carries its page and needs no data files."""
import sys

data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "w") as o:
    o.write("/* generated from control/dashboard.html by control/embed_html.py */\n")
    o.write("#ifndef CTL_DASHBOARD_HTML_H\n#define CTL_DASHBOARD_HTML_H\n")
    o.write("static const char ctl_dashboard_html[] = {\n")
    for i in range(0, len(data), 24):
        o.write(",".join(str(b) for b in data[i:i + 24]) + ",\n")
    o.write("0};\n#endif\n")
