"""Phone links: one photo, one exam, a few minutes; and the address a phone is sent to."""
from __future__ import annotations

import ipaddress
import threading

import pytest

from appliance.camera.phone import PhoneLinkRefused, PhoneLinks, lan_address, phone_host, phone_url
from appliance.config import ServerConfig
from appliance.errors import BadImage


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def links(clock):
    return PhoneLinks(minutes=5, clock=clock)


def test_a_link_works_once(links):
    link = links.create("exam-1", "nurse1")
    assert len(link.token) >= 32 and links.check(link.token) is link
    assert links.redeem(link.token, lambda l: ("attached", l.draft_id)) == ("attached", "exam-1")
    with pytest.raises(PhoneLinkRefused) as used:
        links.check(link.token)
    assert "already used" in used.value.message and "new QR code" in used.value.hint
    with pytest.raises(PhoneLinkRefused):
        links.redeem(link.token, lambda l: pytest.fail("a used link must not attach anything"))


def test_a_refused_photo_leaves_the_link_usable(links):
    link = links.create("exam-1", "nurse1")

    def bad_photo(_):
        raise BadImage("This file is not an image the appliance can read.")
    with pytest.raises(BadImage):
        links.redeem(link.token, bad_photo)
    assert links.check(link.token) is link and not link.used
    links.redeem(link.token, lambda l: None)
    assert link.used


def test_a_link_expires(links, clock):
    link = links.create("exam-1", "nurse1")
    clock.now += 5 * 60 - 1
    assert links.seconds_left(links.check(link.token)) == pytest.approx(1)
    clock.now += 1
    with pytest.raises(PhoneLinkRefused) as expired:
        links.redeem(link.token, lambda l: pytest.fail("an expired link must not attach anything"))
    assert "expired" in expired.value.message


def test_a_new_qr_code_replaces_the_old_one_and_links_are_per_exam(links):
    first = links.create("exam-1", "nurse1")
    other_exam = links.create("exam-2", "nurse2")
    second = links.create("exam-1", "nurse1")
    with pytest.raises(PhoneLinkRefused) as replaced:
        links.check(first.token)
    assert "not valid" in replaced.value.message
    assert links.check(second.token).draft_id == "exam-1"
    assert links.check(other_exam.token).draft_id == "exam-2"
    links.revoke_draft("exam-2")
    with pytest.raises(PhoneLinkRefused):
        links.check(other_exam.token)


@pytest.mark.parametrize("token", ["", "x", "A" * 32, "../../etc/passwd", "é" * 40])
def test_unknown_tokens_are_refused(links, token):
    links.create("exam-1", "nurse1")
    with pytest.raises(PhoneLinkRefused):
        links.check(token)


def test_two_uploads_at_once_cannot_both_pass(links):
    link = links.create("exam-1", "nurse1")
    entered, release = threading.Event(), threading.Event()
    results = []

    def slow_attach(_):
        entered.set()
        release.wait(5)
        return "first"
    worker = threading.Thread(target=lambda: results.append(links.redeem(link.token, slow_attach)))
    worker.start()
    assert entered.wait(5)
    with pytest.raises(PhoneLinkRefused) as busy:
        links.redeem(link.token, lambda l: "second")
    assert "being sent" in busy.value.message
    release.set()
    worker.join(5)
    assert results == ["first"] and link.used


def test_links_are_bounded(links):
    made = [links.create(f"exam-{i}", "nurse1") for i in range(100)]
    with pytest.raises(PhoneLinkRefused):
        links.check(made[0].token)
    assert links.check(made[-1].token)


@pytest.mark.parametrize("host, lan_host, expected", [
    ("127.0.0.1", "", None),                         # localhost only: phones cannot reach it
    ("127.0.0.1", "192.168.4.1", "192.168.4.1"),     # the phones' own listener on the LAN address
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),         # phone and kiosk on one machine (tests)
    ("0.0.0.0", "192.168.4.1", "192.168.4.1"),
    ("192.168.4.1", "", "192.168.4.1"),
    ("0.0.0.0", "bccdms.local", "bccdms.local"),
])
def test_phone_host_follows_the_server_settings(host, lan_host, expected):
    assert phone_host(ServerConfig(host=host, lan_host=lan_host)) == expected


def test_phone_host_finds_the_lan_address_when_listening_everywhere():
    found = phone_host(ServerConfig(host="0.0.0.0"))
    assert found == lan_address()
    if found is not None:
        address = ipaddress.ip_address(found)
        assert address.is_private and not address.is_loopback


def test_phone_url():
    assert phone_url("192.168.4.1", 8080, "tok") == "http://192.168.4.1:8080/phone/tok"
    assert phone_url("fd00::1", 8080, "tok") == "http://[fd00::1]:8080/phone/tok"
