"""What needs no daemon: the SSE parser, the error mapping, URL building."""

import socket
import unittest

import hatchvm
from hatchvm import sse
from hatchvm.websocket import BINARY, CLOSE, TEXT, WebSocket
from hatchvm.errors import error_from_response
from hatchvm.transport import expand, query_string


class SseTest(unittest.TestCase):
    def test_messages_comments_and_a_cut_off_tail(self):
        lines = [
            ": keep-alive\n",
            "id: 7\n", "event: state\n", 'data: {"id": 7}\n', "\n",
            "data:first\r\n", "data: second\r\n", "\r\n",
            "id: 9\n", "event: ready\n", "data: {}\n",  # the stream ends here
        ]
        messages = list(sse.parse(lines))
        self.assertEqual([(m.id, m.event, m.data) for m in messages],
                         [("7", "state", '{"id": 7}'), ("7", "message", "first\nsecond")])


class ErrorMappingTest(unittest.TestCase):
    def test_codes_map_to_classes_with_field_and_retry_after(self):
        err = error_from_response(400, b'{"error": {"code": "invalid_field", "message": "bad", "field": "vcpu_count"}}')
        self.assertIsInstance(err, hatchvm.ValidationError)
        self.assertEqual((err.status, err.code, err.field), (400, "invalid_field", "vcpu_count"))
        err = error_from_response(403, b'{"error": {"code": "quota_exceeded", "message": "m", "field": "max_vms"}}')
        self.assertIsInstance(err, hatchvm.QuotaExceeded)
        self.assertIsInstance(err, hatchvm.Forbidden)
        err = error_from_response(429, b'{"error": {"code": "rate_limited", "message": "slow", "field": null}}', "3")
        self.assertIsInstance(err, hatchvm.RateLimited)
        self.assertEqual(err.retry_after, 3.0)
        err = error_from_response(409, b'{"error": {"code": "invalid_state", "message": "m", "field": null}}')
        self.assertIsInstance(err, hatchvm.InvalidState)
        self.assertNotIsInstance(err, hatchvm.Conflict)

    def test_unknown_codes_and_non_json_bodies_keep_what_was_said(self):
        err = error_from_response(418, b'{"error": {"code": "teapot", "message": "short", "field": null}}')
        self.assertIs(type(err), hatchvm.ApiError)
        self.assertEqual(err.code, "teapot")
        err = error_from_response(502, b"bad gateway")
        self.assertEqual((err.code, err.message), ("http_502", "bad gateway"))


class UrlTest(unittest.TestCase):
    def test_ids_are_escaped_and_queries_spelled_as_the_api_expects(self):
        self.assertEqual(expand("/vms/{id}/logs", {"id": "a/b c"}), "/vms/a%2Fb%20c/logs")
        self.assertEqual(query_string({"async": True, "bytes": None, "follow": False}), "?async=true&follow=false")
        self.assertEqual(query_string({"bytes": None}), "")

    def test_unsupported_urls_are_refused(self):
        with self.assertRaises(hatchvm.HatchError):
            hatchvm.Client("ftp://example")


class WebSocketTest(unittest.TestCase):
    def test_frames_of_every_length_class_round_trip_masked(self):
        left, right = socket.socketpair()
        client, server = WebSocket(left), WebSocket(right)
        try:
            for size in (0, 125, 126, 65535, 65536):
                payload = bytes(i % 251 for i in range(size))
                client.send(BINARY, payload)
                self.assertEqual(server.recv(), (BINARY, payload))
            client.send(TEXT, b'{"type":"eof"}')
            self.assertEqual(server.recv(), (TEXT, b'{"type":"eof"}'))
            client.close()
            self.assertEqual(server.recv()[0], CLOSE)
        finally:
            right.close()


if __name__ == "__main__":
    unittest.main()
