#!/usr/bin/env python3
"""Writes a MISP simulator events file made of the repository's real MISP
events (test-support/data/misp/events: 73 events, 3 835 attributes and
1 554 object attributes, with their tags, galaxies and related events),
repeated COPIES times with fresh uuids, for `misp-sim --events-file`:

    python3 bench/real_events.py 20 > target/real-events.json
    target/yardstick/release/misp-sim --port 0 --key KEY --events-file target/real-events.json

The yardstick's generated events carry no objects and small contexts; these
show what real events cost (docs/performance.md, "Real events").
"""
import copy
import glob
import json
import os
import sys
import uuid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test-support", "data", "misp", "events")


def collect(value, events):
    """Events of a file: one event, a list of them, or a restSearch answer."""
    if isinstance(value, list):
        for item in value:
            collect(item, events)
    elif isinstance(value, dict) and "response" in value:
        collect(value["response"], events)
    elif isinstance(value, dict):
        events.append(value if "Event" in value else {"Event": value})


def main():
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    events = []
    for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.json"), recursive=True)):
        with open(path) as file:
            collect(json.load(file), events)
    out = []
    for copy_number in range(copies):
        def fresh(old):
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{old}-{copy_number}"))

        for event in events:
            event = copy.deepcopy(event)
            body = event["Event"]
            body["uuid"] = fresh(body.get("uuid"))
            for attribute in body.get("Attribute") or []:
                attribute["uuid"] = fresh(attribute.get("uuid"))
            for misp_object in body.get("Object") or []:
                misp_object["uuid"] = fresh(misp_object.get("uuid"))
                for attribute in misp_object.get("Attribute") or []:
                    attribute["uuid"] = fresh(attribute.get("uuid"))
            out.append(event)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
