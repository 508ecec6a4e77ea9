#!/usr/bin/env python3
"""points-py: a saga participant for the compensable step `deduct_points`, in Python.

Written from schemas/PROTOCOL.md and schemas/json/*.json alone (not from the Rust kit), to show
that the written protocol suffices; it follows every *must* of schemas/PROTOCOL.md, whose
sections the comments cite (§5 ...). It reads `<prefix>points.commands`, keeps each user's
balance and the barrier in Postgres, answers on `<prefix>saga.replies` and sends poison to
`<prefix>saga.dlq`. `action` deducts `points` from `user_id`; `compensate` refunds them.

Settings, from the environment: DATABASE_URL and KAFKA_BROKERS (required), TOPIC_PREFIX
(default empty), POINTS_SCHEMA (Postgres schema of its tables, default `points_py`), GROUP_ID
(default `<prefix>points-py`). Needs confluent-kafka and psycopg (requirements.txt); install
them with scripts/python-participant.sh. Stops cleanly on SIGTERM or SIGINT.
"""

import json
import logging
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from os import environ

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

STEP = "deduct_points"
FORWARD_OF = {"compensate": "action"}  # the undo phase -> the forward phase it undoes
ENVELOPE_FIELDS = ("message_id", "kind", "saga_id", "step", "phase", "attempt", "payload", "occurred_at")
MAX_MESSAGE = 256 * 1024  # §2
DLQ_CUT = 65536  # §7
MAX_TEXT = 1000  # §2: reasons and errors
BODY_BOUNDS = {"user_id": (1, 2**53 - 1), "points": (0, 1_000_000_000)}  # deduct_points.json
PARTITION_LOST = (KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,  # commit errors after
                  KafkaError.REBALANCE_IN_PROGRESS, KafkaError._MAX_POLL_EXCEEDED,  # which the partition
                  KafkaError._ASSIGNMENT_LOST)  # may belong to another member
NULL_COMPENSATION = {"null_compensation": True}
ARRIVED_FIRST = "rejected: its cancel or compensate arrived first"  # §5 rule 3
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                        r"([Zz]|[+-][0-9]{2}:[0-9]{2})")

log = logging.getLogger("points-py")
stopping = False


class Poison(Exception):
    """A command that can never be processed (§7); its text is the dlq.error."""


class Rejected(Exception):
    """A business "no" of the forward phase (§5 rule 2)."""


class Failed(Exception):
    """A passing failure: roll back everything, keep no barrier row, reply `failed` (§5)."""


class Stop(BaseException):  # not an Exception: nothing may swallow it
    """SIGTERM or SIGINT arrived while waiting."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_address: str  # host:port/dbname, for logs (never the password)
    brokers: str
    prefix: str
    schema: str
    group_id: str


@dataclass(frozen=True)
class Command:
    saga_id: str
    phase: str
    attempt: int
    user_id: int
    points: int
    deadline: datetime | None
    traceparent: bytes | None


def load_settings() -> Settings:
    """Reads the settings; a missing or invalid one ends the process with one line and exit 2."""

    def bad(text: str):
        print(f"points-py: {text}", file=sys.stderr)
        sys.exit(2)

    url = environ.get("DATABASE_URL", "").strip()
    if not re.match(r"postgres(ql)?://", url):
        bad("DATABASE_URL must be set to a postgres:// URL")
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error as e:
        bad(f"DATABASE_URL is not a valid postgres URL: {e}")
    brokers = environ.get("KAFKA_BROKERS", "").strip()
    if not re.fullmatch(r"[^\s,]+(,[^\s,]+)*", brokers):
        bad("KAFKA_BROKERS must be set to host:port[,host:port...]")
    prefix = environ.get("TOPIC_PREFIX", "")
    if not re.fullmatch(r"[A-Za-z0-9._-]{0,200}", prefix):
        bad(f"TOPIC_PREFIX {prefix!r} may hold only letters, digits, '.', '_' and '-'")
    schema = environ.get("POINTS_SCHEMA", "points_py")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        bad(f"POINTS_SCHEMA {schema!r} must be a lowercase identifier (letters, digits, '_')")
    group_id = environ.get("GROUP_ID", "") or f"{prefix}points-py"
    address = f"{info.get('host', 'localhost')}:{info.get('port', '5432')}/{info.get('dbname', '')}"
    return Settings(url, address, brokers, prefix, schema, group_id)


def pause(seconds: float):
    """Sleeps, but raises Stop as soon as a stop signal arrived."""
    end = time.monotonic() + seconds
    while not stopping and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))
    if stopping:
        raise Stop


def backoff():
    """Delays for a retry loop, 0.5 s doubling up to 10 s; each next one first sleeps the last."""
    delay = 0.5
    while True:
        yield delay
        pause(delay)
        delay = min(delay * 2, 10.0)


def clip(text: str) -> str:
    """A reason or error as the protocol allows it: at most 1,000 characters, no NUL (§2)."""
    return text.replace("\0", "\\0")[:MAX_TEXT]


def ok(output) -> dict:
    return {"outcome": "ok", "output": output}


def rejected(reason: str) -> dict:
    return {"outcome": "rejected", "reason": clip(reason)}


def failed(error: str) -> dict:
    return {"outcome": "failed", "error": clip(error)}


# ---------------------------------------------------------------- parsing and poison (§2, §7)


def parse_time(text: str) -> datetime | None:
    if not RFC3339_RE.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_envelope(value: bytes | None) -> dict:
    if value is None:
        raise Poison("command without a value")
    if len(value) > MAX_MESSAGE:
        raise Poison(f"command of {len(value)} bytes, over the 256 KiB limit")
    try:
        env = json.loads(value.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Poison(f"command is not JSON: {e}") from None
    if not isinstance(env, dict) or env.get("kind") != "command":
        raise Poison("not an envelope of kind command")
    for field in ENVELOPE_FIELDS:
        if env.get(field) is None:
            raise Poison(f"command envelope without {field}")
    unknown = sorted(set(env) - set(ENVELOPE_FIELDS))
    if unknown:
        raise Poison(f"command envelope with unknown field {unknown[0]!r}")
    for field in ("message_id", "saga_id"):
        if not isinstance(env[field], str) or not UUID_RE.fullmatch(env[field]):
            raise Poison(f"command envelope with invalid {field} (not a hyphenated UUID)")
    if not isinstance(env["occurred_at"], str) or parse_time(env["occurred_at"]) is None:
        raise Poison("command envelope with invalid occurred_at (not an RFC 3339 time)")
    return env


def parse_body(body) -> tuple[int, int]:
    if not isinstance(body, dict):
        raise Poison(f"{STEP} body is not a JSON object")
    unknown = sorted(set(body) - set(BODY_BOUNDS))
    if unknown:
        raise Poison(f"{STEP} body with unknown field {unknown[0]!r}")
    for name, (low, high) in BODY_BOUNDS.items():
        if name not in body:
            raise Poison(f"{STEP} body without {name}")
        if not is_int(body[name]) or not low <= body[name] <= high:
            raise Poison(f"{STEP} body: {name} must be an integer from {low} to {high}")
    return body["user_id"], body["points"]


def parse_deadline(headers: dict) -> datetime | None:
    if "saga.deadline" not in headers:
        return None
    try:
        deadline = parse_time(headers["saga.deadline"].decode("utf-8"))
    except (AttributeError, UnicodeDecodeError):  # a header without a value, or not UTF-8
        deadline = None
    if deadline is None:
        raise Poison("saga.deadline header is not an RFC 3339 time")
    return deadline


def parse_command(value: bytes | None, header_list) -> Command:
    """The command in a message, or Poison saying why it can never be processed."""
    headers = dict(header_list or [])  # the last of a repeated header counts
    env = parse_envelope(value)
    step, phase, attempt = env["step"], env["phase"], env["attempt"]
    if not isinstance(step, str) or not 1 <= len(step) <= 64 or "\0" in step:
        raise Poison("command envelope with invalid step (1 to 64 characters, no NUL)")
    if step != STEP:
        raise Poison(f"unknown step {step!r}: this participant runs only {STEP}")
    if phase not in ("action", "compensate"):
        raise Poison(f"phase {phase!r} is not a phase of the compensable step {STEP}")
    if not is_int(attempt) or not 1 <= attempt <= 1_000_000:
        raise Poison("command envelope with invalid attempt (an integer from 1 to 1000000)")
    user_id, points = parse_body(env["payload"])
    return Command(env["saga_id"].lower(), phase, attempt, user_id, points,
                   parse_deadline(headers), headers.get("traceparent"))


# ---------------------------------------------------------------- the database and the barrier (§5)

SCHEMA_DDL = (
    """CREATE TABLE IF NOT EXISTS points (
         user_id bigint PRIMARY KEY,
         balance bigint NOT NULL CHECK (balance >= 0))""",
    """CREATE TABLE IF NOT EXISTS barrier (
         saga_id uuid NOT NULL, step text NOT NULL, phase text NOT NULL,
         reply jsonb NOT NULL,  -- the outcome it answered, resent to every later attempt
         created_at timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (saga_id, step, phase))""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
         id bigserial PRIMARY KEY,
         source_topic text NOT NULL, source_partition integer NOT NULL, source_offset bigint NOT NULL,
         message_key bytea, payload bytea, size integer NOT NULL, truncated boolean NOT NULL,
         error text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
         UNIQUE (source_topic, source_partition, source_offset))""",
)


class Database:
    """One connection, opened again whenever it is lost; `run` retries while Postgres is down."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self.lost():
            if self.conn is not None:
                self.conn.close()
            # search_path names only our schema, so plain table names are ours.
            self.conn = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5,
                                        options=f"-c search_path={self.settings.schema}")
        return self.conn

    def lost(self) -> bool:
        return self.conn is None or self.conn.closed or self.conn.broken

    def run(self, fn):
        """fn(connection), again and again while the database cannot be reached."""
        for delay in backoff():
            try:
                return fn(self.connection())
            except psycopg.Error as e:
                if not self.lost():
                    raise
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                log.error("database %s unavailable (%s); retrying in %.1fs",
                          self.settings.db_address, first_line, delay)

    def close(self):
        if self.conn is not None:
            self.conn.close()


def create_tables(conn: psycopg.Connection, schema: str):
    with conn.transaction():
        # Instances starting together would race on CREATE ... IF NOT EXISTS.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"points-py schema {schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for ddl in SCHEMA_DDL:
            conn.execute(ddl)


def claim(conn, saga_id: str, phase: str, reply) -> bool:
    """Writes the barrier row of (saga, step, phase) unless one exists; True when written.
    A concurrent transaction holding the same new row makes this wait for its end."""
    row = conn.execute(
        "INSERT INTO barrier (saga_id, step, phase, reply) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING true", (saga_id, STEP, phase, Jsonb(reply))).fetchone()
    return row is not None


def stored_reply(conn, saga_id: str, phase: str) -> dict:
    return conn.execute("SELECT reply FROM barrier WHERE saga_id = %s AND step = %s AND phase = %s"
                        " FOR UPDATE", (saga_id, STEP, phase)).fetchone()[0]


def record(conn, saga_id: str, phase: str, reply: dict):
    conn.execute("UPDATE barrier SET reply = %s WHERE saga_id = %s AND step = %s AND phase = %s",
                 (Jsonb(reply), saga_id, STEP, phase))


def deduct(conn, user_id: int, points: int) -> dict:
    row = conn.execute("UPDATE points SET balance = balance - %s WHERE user_id = %s AND balance >= %s"
                       " RETURNING balance", (points, user_id, points)).fetchone()
    if row is not None:
        return ok({"deducted_points": points})
    have = conn.execute("SELECT balance FROM points WHERE user_id = %s", (user_id,)).fetchone()
    if have is None:
        raise Rejected(f"unknown user {user_id}")
    raise Rejected(f"not enough points: user {user_id} has {have[0]}, needs {points}")


def refund(conn, user_id: int, points: int) -> dict:
    row = conn.execute("UPDATE points SET balance = balance + %s WHERE user_id = %s RETURNING balance",
                       (points, user_id)).fetchone()
    if row is None:  # an undo is never rejected (rule 8): the engine tries again
        raise Failed(f"cannot refund: unknown user {user_id}")
    return ok({"refunded_points": points})


def forward(conn, cmd: Command) -> dict:
    """A new forward phase (rule 2), its barrier row already claimed."""
    if cmd.deadline is not None and conn.execute("SELECT now() >= %s", (cmd.deadline,)).fetchone()[0]:
        return rejected("deadline passed")  # §6
    try:
        with conn.transaction():  # a savepoint: a rejection rolls back the business write
            return deduct(conn, cmd.user_id, cmd.points)
    except Rejected as e:
        return rejected(str(e))


def undo(conn, cmd: Command) -> dict:
    """A new undo phase (rules 3, 5, 6), its barrier row already claimed."""
    forward_phase = FORWARD_OF[cmd.phase]
    if claim(conn, cmd.saga_id, forward_phase, rejected(ARRIVED_FIRST)):
        return ok(NULL_COMPENSATION)  # rule 3: the forward phase is now refused for good
    if stored_reply(conn, cmd.saga_id, forward_phase).get("outcome") != "ok":
        return ok(NULL_COMPENSATION)  # rule 5: nothing was done
    return refund(conn, cmd.user_id, cmd.points)  # rule 6


def handle(conn, cmd: Command) -> dict:
    """Runs one command in one transaction with its barrier row and returns the outcome to send.
    Lets a lost connection through (the caller retries the command); other trouble is `failed`."""
    try:
        with conn.transaction():
            if not claim(conn, cmd.saga_id, cmd.phase, None):
                return stored_reply(conn, cmd.saga_id, cmd.phase)  # rule 1 (and 4)
            outcome = forward(conn, cmd) if cmd.phase not in FORWARD_OF else undo(conn, cmd)
            record(conn, cmd.saga_id, cmd.phase, outcome)
            return outcome
    except Failed as e:
        return failed(str(e))
    except psycopg.Error as e:
        if conn.closed or conn.broken:
            raise
        return failed(f"database error: {str(e).strip()}")
    except Exception as e:  # a bug: answer `failed`, so the engine retries and then gives up
        log.exception("unexpected error handling %s of saga %s", cmd.phase, cmd.saga_id)
        return failed(f"internal error: {e!r}")


# ---------------------------------------------------------------- Kafka (§1, §4, §7)


class Kafka:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.last_error: dict[str, float] = {}
        self.producer = Producer(self.config(**{"acks": "all", "linger.ms": 0, "message.timeout.ms": 15000}))

    def config(self, **extra) -> dict:
        return {"bootstrap.servers": self.settings.brokers, "error_cb": self.on_error,
                "logger": logging.getLogger("librdkafka"), **extra}

    def on_error(self, err: KafkaError):
        """librdkafka reconnects by itself; say so, at most every 10 s per kind of error."""
        now = time.monotonic()
        if now - self.last_error.get(err.name(), -1e9) >= 10:
            self.last_error[err.name()] = now
            log.error("kafka broker %s: %s (retrying)", self.settings.brokers, err.str())

    def create_topics(self, names: list[str]):
        admin = AdminClient(self.config())
        for delay in backoff():
            futures = admin.create_topics([NewTopic(n, num_partitions=6) for n in names], request_timeout=10)
            while not all(f.done() for f in futures.values()):
                admin.poll(0.1)  # serves on_error
                pause(0)
            missing = []
            for name, future in futures.items():
                try:
                    future.result()
                    log.info("created topic %s", name)
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        missing.append(name)
                        log.error("kafka broker %s: cannot create topic %s (%s); retrying in %.1fs",
                                  self.settings.brokers, name, e.args[0].str(), delay)
            names = missing
            if not names:
                return

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: list):
        """Publishes one message and waits for the broker's acknowledgement; retries until it has it."""
        for delay in backoff():
            report = []
            self.producer.produce(topic, value=value, key=key, headers=headers,
                                  on_delivery=lambda err, _msg: report.append(err))
            while not report:
                self.producer.poll(0.1)
                if stopping:
                    raise Stop
            if report[0] is None:
                return
            log.error("kafka broker %s did not take a message for %s (%s); retrying in %.1fs",
                      self.settings.brokers, topic, report[0].str(), delay)


def reply_message(cmd: Command, outcome: dict) -> bytes:
    """The reply envelope (§4): fields copied, message_id stable per attempt."""
    message_id = uuid.uuid5(uuid.NAMESPACE_OID, f"{cmd.saga_id}/{STEP}/{cmd.phase}/{cmd.attempt}")
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"message_id": str(message_id), "kind": "reply", "saga_id": cmd.saga_id,
                       "step": STEP, "phase": cmd.phase, "attempt": cmd.attempt,
                       "payload": outcome, "occurred_at": now}, separators=(",", ":")).encode()


# ---------------------------------------------------------------- the loop


class Participant:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings)
        self.kafka = Kafka(settings)
        self.commands = f"{settings.prefix}points.commands"
        self.replies = f"{settings.prefix}saga.replies"
        self.dlq = f"{settings.prefix}saga.dlq"

    def process(self, msg):
        """Handles one message durably: DB commit, then the reply acknowledged by the broker (§5)."""
        try:
            cmd = parse_command(msg.value(), msg.headers())
        except Poison as poison:
            self.dead_letter(msg, clip(str(poison)))
            return
        outcome = self.db.run(lambda conn: handle(conn, cmd))
        headers = [("traceparent", cmd.traceparent)] if cmd.traceparent is not None else []
        self.kafka.send(self.replies, cmd.saga_id.encode(), reply_message(cmd, outcome), headers)
        log.debug("saga %s %s attempt %d: %s", cmd.saga_id, cmd.phase, cmd.attempt, outcome)

    def dead_letter(self, msg, error: str):
        value = msg.value()
        size = len(value) if value is not None else 0
        cut = value[:DLQ_CUT] if value is not None else None
        truncated = size > DLQ_CUT
        self.db.run(lambda conn: conn.execute(
            "INSERT INTO dead_letters (source_topic, source_partition, source_offset, message_key,"
            " payload, size, truncated, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (msg.topic(), msg.partition(), msg.offset(), msg.key(), cut, size, truncated, error)))
        headers = [("dlq.error", error.encode()), ("dlq.source.topic", msg.topic().encode()),
                   ("dlq.source.partition", str(msg.partition()).encode()),
                   ("dlq.source.offset", str(msg.offset()).encode()),
                   ("dlq.source.size", str(size).encode()),
                   ("dlq.truncated", b"true" if truncated else b"false")]
        self.kafka.send(self.dlq, msg.key(), cut, headers)
        log.info("dead-lettered %s [%d] @ %d: %s", msg.topic(), msg.partition(), msg.offset(), error)

    def process_durably(self, consumer: Consumer, msg):
        """process, then commit the offset; an unexpected error retries the same message."""
        for delay in backoff():
            try:
                self.process(msg)
                self.commit(consumer, msg)
                return
            except Exception:
                log.exception("unexpected error on %s [%d] @ %d; retrying in %.1fs",
                              msg.topic(), msg.partition(), msg.offset(), delay)

    def commit(self, consumer: Consumer, msg):
        """Stores the offset after the message. A command whose offset is not stored comes again and
        gets its stored reply (rule 1), so this gives up after a rebalance or a few tries."""
        for tries, delay in enumerate(backoff(), 1):
            try:
                consumer.commit(message=msg, asynchronous=False)
                return
            except KafkaException as e:
                err = e.args[0]
                if tries == 5 or err.code() in PARTITION_LOST:
                    log.warning("offset %d of %s [%d] not committed (%s); the command will come again",
                                msg.offset(), msg.topic(), msg.partition(), err.str())
                    return
                log.error("kafka broker %s: offset commit failed (%s); retrying in %.1fs",
                          self.settings.brokers, err.str(), delay)

    def log_partitions(self, what: str, parts):
        log.info("%s partitions %s of %s", what, sorted(p.partition for p in parts), self.commands)

    def run(self):
        s = self.settings
        log.info("started: database %s, kafka %s, schema %s, group %s",
                 s.db_address, s.brokers, s.schema, s.group_id)
        try:
            self.db.run(lambda conn: create_tables(conn, s.schema))
        except psycopg.Error as e:  # not an outage (say, no right to create the schema): give up
            log.error("cannot create the tables in schema %s: %s", s.schema, str(e).strip())
            sys.exit(1)
        self.kafka.create_topics([self.commands, self.replies, self.dlq])
        consumer = Consumer(self.kafka.config(**{
            "group.id": s.group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 5}))
        consumer.subscribe([self.commands],
                           on_assign=lambda _c, parts: self.log_partitions("assigned", parts),
                           on_revoke=lambda _c, parts: self.log_partitions("revoked", parts))
        log.info("consuming %s as group %s", self.commands, s.group_id)
        try:
            while not stopping:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    self.kafka.on_error(msg.error())
                    continue
                self.process_durably(consumer, msg)
        except Stop:
            pass
        finally:
            log.info("stopping: closing the consumer")
            consumer.close()
            self.kafka.producer.flush(5)
            self.db.close()
        log.info("stopped")


def on_signal(signum, _frame):
    global stopping
    stopping = True


def main():
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # librdkafka's warnings, but not its connection failures: Kafka.on_error reports those.
    logging.getLogger("librdkafka").setLevel(logging.WARNING)
    logging.getLogger("librdkafka").addFilter(lambda record: record.args[:1] != ("FAIL",))
    settings = load_settings()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        Participant(settings).run()
    except Stop:
        log.info("stopped before consuming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
