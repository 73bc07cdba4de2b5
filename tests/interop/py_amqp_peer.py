"""The py-amqp side of warren's interoperability tests (run with /usr/bin/python3).

Subcommands (the broker is the test broker on 127.0.0.1:5672, guest/guest):

  consume QUEUE COUNT   consume COUNT messages from QUEUE and print, as JSON, exactly what
                        py-amqp decoded: bodies and every property, each value tagged with
                        its Python type.
  publish QUEUE SET     publish one message with all 14 properties and a headers table of
                        the values in SET ("common", or "large_ints") to QUEUE through the
                        default exchange; print the content-header payload py-amqp's own
                        serializer produced (base64) and the body (base64).
  request QUEUE         publish a request to QUEUE with reply_to (direct reply-to) and a
                        correlation id, wait for the reply and print it.

Value tagging (so the C++ side can check types exactly): {"py": <type name>, "v": <value>},
where int is a decimal string (no precision loss above 2**53), float is float.hex(),
Decimal is str(), bytes are base64, datetime is whole seconds since the epoch (UTC), list and
dict hold tagged values, None is null. Anything else is reported by type name and repr, so an
unexpected type shows up in a test failure instead of being coerced.

Exit status 0 on success; any error is a Python traceback on stderr and a non-zero status.
"""

import base64
import calendar
import datetime
import decimal
import json
import struct
import sys
import time

import amqp

BROKER = '127.0.0.1:5672'
TIMEOUT = 20.0


def b64(data):
    if isinstance(data, str):
        data = data.encode('utf-8')
    return base64.b64encode(bytes(data)).decode('ascii')


def tagged(v):
    name = type(v).__name__
    # bool first: it is a subclass of int.
    if isinstance(v, bool):
        return {'py': name, 'v': v}
    if isinstance(v, int):
        return {'py': name, 'v': str(v)}
    if isinstance(v, float):
        return {'py': name, 'v': v.hex()}
    if isinstance(v, decimal.Decimal):
        return {'py': name, 'v': str(v)}
    if isinstance(v, str):
        return {'py': name, 'v': v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {'py': name, 'v': b64(v)}
    if isinstance(v, datetime.datetime):
        return {'py': name, 'v': str(calendar.timegm(v.utctimetuple()))}
    if v is None:
        return {'py': name, 'v': None}
    if isinstance(v, (list, tuple)):
        return {'py': name, 'v': [tagged(x) for x in v]}
    if isinstance(v, dict):
        return {'py': name, 'v': {k: tagged(x) for k, x in v.items()}}
    return {'py': name, 'v': repr(v)}


def connect():
    conn = amqp.Connection(BROKER, userid='guest', password='guest',
                           connect_timeout=TIMEOUT)
    conn.connect()
    ch = conn.channel()
    # Keep bodies as the octets that arrived: py-amqp otherwise decodes a body whose
    # content_encoding names a codec, which would hide what was on the wire.
    ch.auto_decode = False
    return conn, ch


def drain_until(conn, done):
    deadline = time.monotonic() + TIMEOUT
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError('timed out waiting for messages')
        conn.drain_events(timeout=left)


def consume(queue, count):
    conn, ch = connect()
    got = []
    ch.basic_consume(queue, callback=got.append, no_ack=True)
    drain_until(conn, lambda: len(got) >= count)
    out = [{
        'body': b64(m.body),
        'body_type': type(m.body).__name__,
        'properties': {k: tagged(v) for k, v in m.properties.items()},
    } for m in got]
    conn.close()
    return {'messages': out}


# What py-amqp's _write_item can produce. Order matters: the C++ test checks it survives.
COMMON_HEADERS = {
    'bool_true': True,
    'bool_false': False,
    'int_small': 42,
    'int_negative': -7,
    'int_i32_max': 2147483647,
    'int_i32_min_plus_1': -2147483647,
    'float': 0.1,
    'float_negative_zero': -0.0,
    'decimal': decimal.Decimal('-12.345'),
    'decimal_integral': decimal.Decimal('42'),
    'str': 'h\u00e9llo \u2713',
    'str_empty': '',
    'bytes': b'\x00\xff\x10binary',
    'list': [1, 'two', None, [True], {'k': 2.5}],
    'list_empty': [],
    'dict': {'k': 'v', 'nested': {'deep': -1}},
    'dict_empty': {},
    'datetime': datetime.datetime(2023, 11, 14, 22, 13, 20),
    'none': None,
}

# Integers outside signed 32 bits: py-amqp writes them with the letter 'L' (signed 64), a
# letter RabbitMQ's table (and warren's) does not define; RabbitMQ passes them through.
LARGE_INT_HEADERS = {
    'int_large': 2 ** 40,
    'int_large_negative': -(2 ** 40),
    'int_i32_min': -2147483648,
}

BODY = bytes(range(256)) * 3


def publish(queue, header_set):
    headers = {'common': COMMON_HEADERS, 'large_ints': LARGE_INT_HEADERS}[header_set]
    msg = amqp.Message(
        BODY,
        content_type='application/x-interop',
        content_encoding='binary',
        application_headers=headers,
        delivery_mode=2,
        priority=5,
        correlation_id='corr-py-1',
        reply_to='reply-queue',
        expiration='600000',
        message_id='msg-py-1',
        timestamp=1700000000,
        type='interop.\u00fcnicode',
        user_id='guest',
        app_id='py-amqp',
        cluster_id='cluster-py',
    )
    # The content-header payload as py-amqp frames it (class, weight, body size, then its own
    # property serializer), for the C++ side to decode and compare with what it received.
    header = struct.pack('>HHQ', 60, 0, len(BODY)) + msg._serialize_properties()
    conn, ch = connect()
    ch.basic_publish(msg, exchange='', routing_key=queue)
    conn.close()
    return {'content_header': b64(header), 'body': b64(BODY)}


def request(queue):
    conn, ch = connect()
    replies = []
    ch.basic_consume('amq.rabbitmq.reply-to', callback=replies.append, no_ack=True)
    ch.basic_publish(amqp.Message(b'ping from py-amqp', reply_to='amq.rabbitmq.reply-to',
                                  correlation_id='req-42'),
                     exchange='', routing_key=queue)
    drain_until(conn, lambda: replies)
    reply = replies[0]
    conn.close()
    return {
        'body': b64(reply.body),
        'properties': {k: tagged(v) for k, v in reply.properties.items()},
    }


def main(argv):
    cmd = argv[1]
    if cmd == 'consume':
        result = consume(argv[2], int(argv[3]))
    elif cmd == 'publish':
        result = publish(argv[2], argv[3])
    elif cmd == 'request':
        result = request(argv[2])
    else:
        raise SystemExit('unknown subcommand ' + cmd)
    json.dump(result, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main(sys.argv)
