// Package sas owns Azure shared access signatures (SAS) for devices: the
// enrollment-group key derivation, making the tokens a device presents as its
// MQTT password to DPS and IoT Hub, and parsing and checking those tokens the
// way the service does, for the emulator.
//
// Keys cross this package's API decoded (raw bytes). Azure shows and stores
// them base64-encoded; DecodeKey and EncodeKey convert at the edges, so a key
// is never signed with its text form by mistake.
package sas
