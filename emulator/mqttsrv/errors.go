package mqttsrv

import "errors"

// Reasons a connection ends or a publish fails. Session.Closed and Delivery.Err wrap them, so callers test
// with errors.Is.
var (
	// ErrServerClosed: Server.Close was called.
	ErrServerClosed = errors.New("mqtt server closed")
	// ErrClientDisconnected: the client sent DISCONNECT. Only in this case must its will be discarded.
	ErrClientDisconnected = errors.New("client sent DISCONNECT")
	// ErrProtocolViolation: the client sent a malformed packet or one it must not send.
	ErrProtocolViolation = errors.New("MQTT protocol violation")
	// ErrPacketTooLarge: the client announced a packet above Options.MaxPacketSize. Also an ErrProtocolViolation.
	ErrPacketTooLarge = errors.New("packet too large")
	// ErrKeepAliveTimeout: nothing arrived within 1.5 times the client's keep-alive (MQTT 3.1.1 §3.1.2.10).
	ErrKeepAliveTimeout = errors.New("keep-alive expired")
	// ErrReplaced: a Registry closed the connection because a newer one registered under the same key.
	ErrReplaced = errors.New("replaced by a newer connection")
	// ErrConnClosed: the connection has ended (publishing on it, or a QoS 1 message left unacknowledged).
	ErrConnClosed = errors.New("connection closed")
	// ErrNotConnected: publishing before the CONNACK has been sent.
	ErrNotConnected = errors.New("connection not established yet")
)
