// Package mqttsrv is the MQTT 3.1.1 server core of iotemu, the local stand-in for Azure DPS and IoT Hub.
//
// Azure's MQTT endpoints are protocol gateways that answer each connection themselves; they are not
// brokers. So this package routes nothing: it owns the wire (TLS handshake, framing, validation, keep-alive,
// acknowledgements, packet identifiers) and hands every accepted connection to a Handler, whose Session
// decides what subscriptions mean and what to do with each message. The DPS and hub front-ends are such
// handlers.
//
// Input is untrusted. Every packet is framed here before the paho codec
// (github.com/eclipse/paho.mqtt.golang/packets) sees it: the remaining length is capped before anything is
// allocated, the whole packet must arrive within a deadline, and flags, strings, topics and identifiers are
// checked against MQTT 3.1.1. The paho codec trusts its input, so it only ever decodes a validated packet.
// A malformed packet closes the connection, as the specification requires.
//
// What is deliberately not here: retained messages, will publication (a session is told whether the client
// disconnected cleanly and can act on the will itself, as IoT Hub forwards it as telemetry), persistent
// sessions, and QoS 2 towards the client.
package mqttsrv
