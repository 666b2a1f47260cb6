#!/usr/bin/python3
"""Prints faprompt events from an MQTT broker (Debian: python3-paho-mqtt).
    pipelines/mqtt_consumer.py [host] [port] [topic]   # default: localhost 1883 faprompt/#"""
import json
import sys

import paho.mqtt.client as mqtt

host, port = (sys.argv[1:2] or ["localhost"])[0], int((sys.argv[2:3] or ["1883"])[0])
topic = (sys.argv[3:4] or ["faprompt/#"])[0]


def on_message(client, userdata, msg):
    d = json.loads(msg.payload)
    boxes = " ".join(f"[{r['x']},{r['y']} {r['width']}x{r['height']} peak {r['peak']:.2f}]"
                     for r in d["regions"])
    print(f"{d['time']} {d['source']:>8} #{d['sequence']:<6} {d['event'] or '':16} "
          f"score {d['score']:.3f} {'ANOMALY' if d['anomalous'] else 'ok':7} {boxes}", flush=True)


client = mqtt.Client()
client.on_connect = lambda c, u, f, rc: c.subscribe(topic, qos=1)
client.on_message = on_message
client.connect(host, port)
client.loop_forever()
