"""The chat page as a product, in a real headless Chromium at desktop and phone sizes:
unread count, new-messages button, own messages, multi-line, the length limit, renames,
presence in every tab, readers, the phone layout and clean reconnects."""

import pytest
from playwright.async_api import expect

from tests.browser import chromium, collect_console_errors, wait_connected

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT = 10_000  # ms


async def open_chat(browser, url, nick=None, room="product", viewport=DESKTOP):
    """A person in their own browser context on the chat page, as ``nick`` or anonymous."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    page.errors = collect_console_errors(page)
    query = f"?room={room}" + (f"&nick={nick}" if nick else "")
    await page.goto(url + query)
    await wait_connected(page)
    if nick:
        await page.locator("#chat-online .name.me").wait_for(state="attached", timeout=WAIT)
    return page


async def say(page, text):
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")


async def hide(page, hidden=True):
    """Make the page believe its tab went to the background (or came back)."""
    await page.evaluate("""(hidden) => {
        Object.defineProperty(document, "visibilityState",
                              {configurable: true, get: () => hidden ? "hidden" : "visible"});
        Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


async def test_unread_count_in_title_while_hidden(http_server_client):
    """Messages arriving while the tab is hidden count in its title; showing it clears that."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await hide(bob)
        await say(alice, "one")
        await say(alice, "two")
        await expect(bob).to_have_title("(2) Chat · Tornado Realtime", timeout=WAIT)
        await hide(bob, False)
        await expect(bob).to_have_title("Chat · Tornado Realtime", timeout=WAIT)
        await say(alice, "seen at once")
        await bob.locator("#chat-log .entry", has_text="seen at once").wait_for(timeout=WAIT)
        await expect(bob).to_have_title("Chat · Tornado Realtime")
        assert bob.errors == []


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_new_messages_button_when_scrolled_up(http_server_client, viewport):
    """Scrolled up, a new message shows "New messages ↓"; clicking it goes to the end."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", viewport=viewport)
        bob = await open_chat(browser, url, "bob", viewport=viewport)
        for n in range(40):
            await alice.evaluate("""(text) => {
                document.getElementById("chat-text").value = text;
                document.getElementById("chat-form").requestSubmit();
            }""", f"filler {n}")
        await bob.locator("#chat-log .entry", has_text="filler 39").wait_for(timeout=WAIT)
        button = bob.locator("#chat-new")
        await expect(button).to_be_hidden()
        await bob.evaluate('document.getElementById("chat-log").scrollTop = 0')
        await say(alice, "while you were up there")
        await expect(button).to_be_visible(timeout=WAIT)
        await button.click()
        await expect(button).to_be_hidden()
        await expect(bob.locator("#chat-log .entry", has_text="while you were up there")
                     ).to_be_in_viewport()


async def test_own_messages_are_marked_beyond_colour(http_server_client):
    """One's own message sits on the other side, tinted, and says "you" in its text."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await say(alice, "mine")
        own = alice.locator("#chat-log .entry.mine", has_text="mine")
        await own.wait_for(timeout=WAIT)
        await expect(own.locator(".you-tag")).to_have_text("you")
        theirs = bob.locator("#chat-log .entry", has_text="mine")
        await theirs.wait_for(timeout=WAIT)
        await expect(theirs).not_to_have_class("entry msg mine")
        assert await theirs.locator(".you-tag").count() == 0
        own_box, log_box = await own.bounding_box(), await alice.locator("#chat-log").bounding_box()
        assert own_box["x"] + own_box["width"] > log_box["x"] + log_box["width"] - 20  # right
        assert own_box["x"] > log_box["x"] + 40  # not full width from the left
        colours = await own.evaluate("(node) => getComputedStyle(node).backgroundColor")
        other = await theirs.evaluate("(node) => getComputedStyle(node).backgroundColor")
        assert colours != other


async def test_shift_enter_writes_lines_and_enter_sends(http_server_client):
    """Shift+Enter adds a line; Enter sends; the others see the lines, as text."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await alice.click("#chat-text")
        await alice.keyboard.type("first line")
        await alice.keyboard.press("Shift+Enter")
        await alice.keyboard.type("<i>second</i> line")
        assert await alice.input_value("#chat-text") == "first line\n<i>second</i> line"
        await alice.keyboard.press("Enter")
        line = bob.locator("#chat-log .entry", has_text="first line")
        await line.wait_for(timeout=WAIT)
        text = line.locator(".text")
        assert await text.text_content() == "first line\n<i>second</i> line"
        assert await text.evaluate("(node) => getComputedStyle(node).whiteSpace") == "pre-wrap"
        assert await line.locator("i").count() == 0
        rendered = await text.evaluate("(node) => node.innerText")
        assert rendered.split("\n") == ["first line", "<i>second</i> line"]
        await expect(alice.locator("#chat-text")).to_have_value("")


async def test_counter_and_refusal_at_the_limit(http_server_client):
    """A 10,000-character paste is kept whole, the counter says how much is too much, and
    sending is refused until it is shortened to 4,000."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        counter = alice.locator("#chat-counter")
        await alice.fill("#chat-text", "x" * 3600)
        await expect(counter).to_have_text("3,600 / 4,000")
        await alice.fill("#chat-text", "y" * 10_000)
        assert len(await alice.input_value("#chat-text")) == 10_000  # never cut
        await expect(counter).to_have_text("10,000 / 4,000: 6,000 too many")
        await alice.press("#chat-text", "Enter")
        error = alice.locator("#chat-field-error")
        await expect(error).to_contain_text("limit is 4,000. Shorten it by 6,000")
        await expect(alice.locator("#chat-text")).to_have_attribute("aria-invalid", "true")
        assert len(await alice.input_value("#chat-text")) == 10_000
        await alice.fill("#chat-text", "z" * 4000)
        await expect(error).to_be_hidden()
        await alice.press("#chat-text", "Enter")
        await alice.locator("#chat-log .entry.mine", has_text="zzzz").wait_for(timeout=WAIT)
        assert alice.errors == []


async def test_blank_message_is_refused_visibly(http_server_client):
    """Sending only spaces and newlines says why nothing was sent."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        await alice.fill("#chat-text", "   \n  ")
        await alice.click("#chat-send")
        await expect(alice.locator("#chat-field-error")).to_have_text(
            "Type a message first: a blank message is not sent.")
        assert await alice.locator("#chat-log .entry.msg").count() == 0
        await alice.fill("#chat-text", "now something")
        await expect(alice.locator("#chat-field-error")).to_be_hidden()


async def test_rename_is_one_notice_everywhere(http_server_client):
    """Changing nickname shows "alice is now alicia" once to others, "You are now" to her,
    and updates both online lists; no left or joined."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await alice.locator("#chat-log .event", has_text="bob joined").wait_for(timeout=WAIT)
        await alice.fill("#chat-nick", "alicia")
        await alice.click("#chat-enter")
        await bob.locator("#chat-log .event", has_text="alice is now alicia").wait_for(
            timeout=WAIT)
        await alice.locator("#chat-log .event", has_text="You are now alicia").wait_for(
            timeout=WAIT)
        await expect(bob.locator("#chat-online .name")).to_have_text(["alicia", "bob (you)"])
        await expect(alice.locator("#chat-online .name.me")).to_have_text("alicia (you)")
        assert await bob.locator("#chat-log .event", has_text="left").count() == 0
        assert await bob.locator("#chat-log .event", has_text="alicia joined").count() == 0
        await say(alice, "renamed and speaking")
        line = bob.locator("#chat-log .entry", has_text="renamed and speaking")
        await expect(line.locator(".who")).to_have_text("alicia", timeout=WAIT)
        await expect(alice.locator("#chat-where")).to_contain_text("as alicia")


async def test_presence_shows_in_every_tab_including_the_joiners(http_server_client):
    """Bob is here first; Alice's tab says she joined and that Bob is here, Bob's says Alice
    joined; a third arrival shows in both."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        bob = await open_chat(browser, url, "bob")
        await bob.locator("#chat-log .event", has_text="You joined as bob.").wait_for(
            timeout=WAIT)
        alice = await open_chat(browser, url, "alice")
        await alice.locator("#chat-log .event", has_text="You joined as alice.").wait_for(
            timeout=WAIT)
        await expect(alice.locator("#chat-log .event", has_text="Here: bob")).to_have_count(1)
        await bob.locator("#chat-log .event", has_text="alice joined").wait_for(timeout=WAIT)
        await open_chat(browser, url, "carol")
        for page in (alice, bob):
            await page.locator("#chat-log .event", has_text="carol joined").wait_for(
                timeout=WAIT)
            await expect(page.locator("#chat-log .event", has_text="joined as")).to_have_count(1)


async def test_reconnect_of_everyone_shows_no_presence_noise(http_server_client, hub):
    """When every socket drops and comes back, no tab shows joins or lefts of people who
    were there all along, and none says messages may be missing."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await say(alice, "before")
        await bob.locator("#chat-log .entry", has_text="before").wait_for(timeout=WAIT)
        await alice.locator("#chat-log .event", has_text="bob joined").wait_for(timeout=WAIT)
        events = "#chat-log .event"
        before = {page: await page.locator(events).all_text_contents() for page in (alice, bob)}
        for connection in list(hub.connections):
            connection.close(1001, "restart")
        for page in (alice, bob):
            await page.wait_for_selector('#conn-state:not([data-state="open"])', timeout=WAIT)
        for page in (alice, bob):
            await wait_connected(page)
        await say(bob, "after")
        for page in (alice, bob):
            await page.locator("#chat-log .entry", has_text="after").wait_for(timeout=WAIT)
            after = await page.locator(events).all_text_contents()
            assert [text for text in after if "joined" in text or "left" in text] == \
                [text for text in before[page] if "joined" in text or "left" in text]
            assert await page.locator("#chat-log", has_text="may be missing").count() == 0


async def test_readers_count_is_shown(http_server_client):
    """Anonymous readers are counted in every tab: "2 people reading", then 1, then none."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        readers = alice.locator("#chat-readers")
        await expect(readers).to_be_hidden()
        first = await open_chat(browser, url)
        await expect(readers).to_have_text("1 person reading", timeout=WAIT)
        await expect(first.locator("#chat-readers")).to_have_text("1 person reading, you included")
        second = await open_chat(browser, url)
        await expect(readers).to_have_text("2 people reading", timeout=WAIT)
        await expect(second.locator("#chat-readers")).to_have_text(
            "2 people reading, you included")
        await first.context.close()
        await expect(readers).to_have_text("1 person reading", timeout=WAIT)
        await second.fill("#chat-nick", "dana")
        await second.click("#chat-enter")
        await expect(readers).to_be_hidden(timeout=WAIT)


async def test_phone_layout_pins_the_composer_and_folds_the_rest(http_server_client):
    """At 390x844, with the log full, the composer sits at the bottom of the viewport, the
    room and nickname fold behind a button, and the online list is a drawer."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice", viewport=PHONE)
        bob = await open_chat(browser, url, "bob", viewport=PHONE)
        for n in range(40):
            await bob.evaluate("""(text) => {
                document.getElementById("chat-text").value = text;
                document.getElementById("chat-form").requestSubmit();
            }""", f"line {n}\nwith a second line")
        await alice.locator("#chat-log .entry", has_text="line 39").wait_for(timeout=WAIT)

        composer = await alice.locator("#chat-form").bounding_box()
        assert PHONE["height"] - 40 < composer["y"] + composer["height"] <= PHONE["height"]
        await expect(alice.locator("#chat-text")).to_be_in_viewport()
        assert await alice.evaluate("document.scrollingElement.scrollHeight") <= PHONE["height"]
        log = await alice.locator("#chat-log").bounding_box()
        assert log["height"] > PHONE["height"] / 2  # the log fills the screen
        await expect(alice.locator("#chat-log .entry", has_text="line 39")).to_be_in_viewport()

        await expect(alice.locator("#chat-join")).to_be_hidden()
        await expect(alice.locator("#chat-where")).to_contain_text("product · as alice")
        join_toggle = alice.locator("#chat-join-toggle")
        await join_toggle.click()
        await expect(alice.locator("#chat-nick")).to_be_visible()
        await expect(join_toggle).to_have_attribute("aria-expanded", "true")

        toggle = alice.locator("#chat-people-toggle")
        drawer = alice.locator("#chat-people")
        await expect(drawer).to_be_hidden()
        await expect(toggle).to_have_attribute("aria-expanded", "false")
        await toggle.focus()
        await alice.keyboard.press("Enter")
        await expect(drawer).to_be_visible()
        await expect(toggle).to_have_attribute("aria-expanded", "true")
        await expect(drawer.locator(".name", has_text="bob")).to_be_in_viewport()
        await alice.keyboard.press("Escape")
        await expect(drawer).to_be_hidden()
        await expect(toggle).to_be_focused()
        await toggle.click()
        await drawer.locator(".name", has_text="bob").click()  # write privately: drawer closes
        await expect(drawer).to_be_hidden()
        await expect(alice.locator("#chat-to-name")).to_have_text("bob")
        assert alice.errors == []


async def test_desktop_layout_keeps_online_list_and_form_visible(http_server_client):
    """At 1280x800 the online list and the room form are on the page; no drawer button."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        await expect(alice.locator("#chat-people")).to_be_visible()
        await expect(alice.locator("#chat-join")).to_be_visible()
        await expect(alice.locator("#chat-people-toggle")).to_be_hidden()
        await expect(alice.locator("#chat-join-toggle")).to_be_hidden()


async def test_clean_reconnect_and_first_connect_say_nothing_is_missing(http_server_client, hub):
    """A first connect and a reconnect the server fully recovered show no "may be missing"."""
    url = http_server_client.get_url("/chat")
    async with chromium() as browser:
        alice = await open_chat(browser, url, "alice")
        bob = await open_chat(browser, url, "bob")
        await say(alice, "first")
        await bob.locator("#chat-log .entry", has_text="first").wait_for(timeout=WAIT)
        dropped = next(c for c in hub.connections if getattr(c, "nick", None) == "bob")
        # Bob's socket hears nothing more, and closes only once Alice's message is stored,
        # so his page cannot reconnect early and get it live instead of recovered.
        hub.forget(dropped)
        await say(alice, "while away")
        await alice.locator("#chat-log .entry", has_text="while away").wait_for(timeout=WAIT)
        dropped.close(1001, "going away")
        await bob.wait_for_selector('#conn-state:not([data-state="open"])', timeout=WAIT)
        await wait_connected(bob)
        await bob.locator("#chat-log .entry", has_text="while away").wait_for(timeout=WAIT)
        await bob.locator("#chat-log .event", has_text="1 missed message").wait_for(timeout=WAIT)
        assert await bob.locator("#chat-log", has_text="may be missing").count() == 0
        assert await alice.locator("#chat-log", has_text="may be missing").count() == 0
