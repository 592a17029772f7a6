"""Synthetic summarisation tasks of the "mobile-service" kind (BlueLM-2.5 §2.3.6): a phone notification or a
short message thread → a one-sentence summary (verl schema, `ability="summary"`, scored by ROUGE-L against the
reference, `rewards.summary`).

Levels:

1. one notification (a delivery, a card payment, a calendar reminder, a flight change) → its key facts;
2. a two-person thread of three messages that moves a plan → who, what, the new time and place;
3. a group thread of five messages where a first proposal is replaced → the final decision only (the summary
   must drop the superseded restaurant and time).

The reference summaries are written from the facts the text was made from, not from the text, so they are
exact: ``extra_info.reasoning`` lists those facts, ``extra_info.response`` is the reference sentence and
``reward_model.ground_truth`` the same sentence. Every sample is certified: its response scores ROUGE-L 1.0.

>>> row = generate_summary(1, "train", seed=0)[0]
>>> row["extra_info"]["response"] == row["reward_model"]["ground_truth"], row["data_source"]
(True, 'mixrl/synthetic_summary')
"""

from __future__ import annotations

import random
from typing import Any, Callable

from mixrl.data.rows import Sample, generate_rows
from rewards.summary import rouge_l

LEVELS = (1, 2, 3)

NAMES = ("Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jada", "Kai", "Lena", "Milo", "Nora",
         "Omar", "Pia", "Rosa", "Sam", "Tara", "Vera", "Wes", "Yuki")
SHOPS = ("BookNook", "GadgetHub", "GreenGrocer", "ShoeBox", "PetPal", "HomeCraft", "ToyTown", "SportLine")
MERCHANTS = ("City Cafe", "FreshMart", "MetroRail", "CineMax", "QuickFuel", "Corner Bakery", "TechStore")
BANKS = ("NorthBank", "Unity Bank", "Harbor Credit", "PrimeBank")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CITIES = ("Lisbon", "Oslo", "Madrid", "Vienna", "Prague", "Dublin", "Athens", "Warsaw", "Zurich")
EVENTS = ("dentist appointment", "team meeting", "yoga class", "piano lesson", "project review", "haircut")
PLACES = ("the library", "the main station", "the park entrance", "the cafe on Elm Street", "the gym", "the museum")
ACTIVITIES = ("tennis", "the movie", "lunch", "the study session", "the bike ride", "coffee")
RESTAURANTS = ("Luigi's", "the Thai place", "Sakura Sushi", "the burger bar", "Casa Verde", "the noodle shop")
HOURS = ("9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm", "6 pm", "7 pm", "8 pm")

Task = tuple[str, str, str, list[str]]  # (kind, text to summarise, reference summary, facts)


def _two(rng: random.Random, pool: tuple[str, ...]) -> tuple[str, str]:
    a, b = rng.sample(pool, 2)
    return a, b


# ---- level 1: one notification -------------------------------------------------------------------------------

def _delivery(rng: random.Random) -> Task:
    shop, day, order = rng.choice(SHOPS), rng.choice(DAYS), rng.randint(10000, 99999)
    t1 = rng.randrange(len(HOURS) - 2)
    start, end = HOURS[t1], HOURS[t1 + 2]
    text = (f"{shop}: Good news! Your order #{order} has been dispatched and is out for delivery. Our courier will "
            f"arrive on {day} between {start} and {end}. Track your parcel in the app.")
    summary = f"Your {shop} order {order} arrives on {day} between {start} and {end}."
    return "delivery", text, summary, [f"shop: {shop}", f"order: {order}", f"day: {day}", f"window: {start}-{end}"]


def _payment(rng: random.Random) -> Task:
    bank, merchant = rng.choice(BANKS), rng.choice(MERCHANTS)
    amount, card, day = f"{rng.randint(3, 250)}.{rng.randint(0, 99):02d}", rng.randint(1000, 9999), rng.choice(DAYS)
    text = (f"{bank} alert: A payment of ${amount} to {merchant} was made with your card ending {card} on {day}. "
            "If you did not make this payment, call us immediately.")
    summary = f"You paid ${amount} to {merchant} with your card ending {card} on {day}."
    return "payment", text, summary, [f"amount: ${amount}", f"merchant: {merchant}", f"card: {card}", f"day: {day}"]


def _reminder(rng: random.Random) -> Task:
    event, name, hour, place = rng.choice(EVENTS), rng.choice(NAMES), rng.choice(HOURS), rng.choice(PLACES)
    text = (f"Calendar: Reminder - your {event} with {name} starts in 30 minutes, at {hour}, at {place}. "
            "Tap to see directions.")
    summary = f"Your {event} with {name} starts at {hour} at {place}."
    return "reminder", text, summary, [f"event: {event}", f"with: {name}", f"time: {hour}", f"place: {place}"]


def _flight(rng: random.Random) -> Task:
    code = f"{rng.choice(('LX', 'TP', 'OS', 'IB', 'SK'))}{rng.randint(100, 999)}"
    city, delay, gate = rng.choice(CITIES), rng.choice((20, 35, 45, 60, 90)), f"{rng.choice('ABCD')}{rng.randint(1, 40)}"
    hour = rng.choice(HOURS)
    text = (f"Flight update: {code} to {city} is delayed by {delay} minutes. New departure time {hour}, boarding at "
            f"gate {gate}. We apologise for the inconvenience.")
    summary = f"Flight {code} to {city} is delayed {delay} minutes and now leaves at {hour} from gate {gate}."
    return "flight", text, summary, [f"flight: {code}", f"to: {city}", f"delay: {delay} min", f"new time: {hour}",
                                     f"gate: {gate}"]


# ---- level 2: a two-person thread ----------------------------------------------------------------------------

def _moved_plan(rng: random.Random) -> Task:
    a, b = _two(rng, NAMES)
    activity, day, place = rng.choice(ACTIVITIES), rng.choice(DAYS), rng.choice(PLACES)
    old, new = _two(rng, HOURS)
    text = (f"{a}: Are we still on for {activity} on {day} at {old}?\n"
            f"{b}: Yes! Could we make it {new} instead?\n"
            f"{a}: Sure, see you at {place} at {new}.")
    summary = f"{a} and {b} moved {activity} on {day} to {new} at {place}."
    return "thread", text, summary, [f"people: {a}, {b}", f"plan: {activity}", f"day: {day}", f"time: {new} (was {old})",
                                     f"place: {place}"]


def _pickup(rng: random.Random) -> Task:
    a, b = _two(rng, NAMES)
    item, it = rng.choice((("the keys", "them"), ("the tickets", "them"), ("the charger", "it"), ("the package", "it"),
                           ("the books", "them")))
    day, hour, place = rng.choice(DAYS), rng.choice(HOURS), rng.choice(PLACES)
    text = (f"{a}: Hey, I left {item} at home. Can you bring {it} on {day}?\n"
            f"{b}: No problem. Where should I drop {it} off?\n"
            f"{a}: At {place}, around {hour}. Thanks!")
    summary = f"{b} will bring {item} to {a} at {place} around {hour} on {day}."
    return "thread", text, summary, [f"who brings: {b}", f"for: {a}", f"item: {item}", f"place: {place}", f"time: {hour}",
                                     f"day: {day}"]


# ---- level 3: a group thread with a superseded proposal ------------------------------------------------------

def _group_dinner(rng: random.Random) -> Task:
    a, b, c = rng.sample(NAMES, 3)
    first, final = _two(rng, RESTAURANTS)
    day = rng.choice(DAYS)
    early, late = sorted(rng.sample(range(6, 12), 2))
    old_hour, new_hour = HOURS[early], HOURS[late]
    text = (f"{a}: Dinner on {day}? How about {first} at {old_hour}?\n"
            f"{b}: {first[0].upper() + first[1:]} is closed on {day}s, sorry.\n"
            f"{c}: What about {final}? I can only make it at {new_hour}.\n"
            f"{a}: Works for me.\n"
            f"{b}: Great, {final} at {new_hour} it is.")
    summary = f"{a}, {b} and {c} will have dinner at {final} on {day} at {new_hour}."
    return "group", text, summary, [f"people: {a}, {b}, {c}", f"final place: {final} (not {first})", f"day: {day}",
                                    f"final time: {new_hour} (not {old_hour})"]


_BY_LEVEL: dict[int, tuple[Callable[[random.Random], Task], ...]] = {
    1: (_delivery, _payment, _reminder, _flight),
    2: (_moved_plan, _pickup),
    3: (_group_dinner,),
}
_ASK = {"delivery": "notification", "payment": "notification", "reminder": "notification", "flight": "notification",
        "thread": "conversation", "group": "group chat"}


def sample_summary(rng: random.Random, difficulty: int) -> Sample:
    """One text to summarise of the given level (1..3), with the facts and the reference summary."""
    if difficulty not in _BY_LEVEL:
        raise ValueError(f"summary difficulty must be in {LEVELS}, got {difficulty}")
    kind, text, summary, facts = rng.choice(_BY_LEVEL[difficulty])(rng)
    prompt = f"Summarise this {_ASK[kind]} in one sentence.\n\n{text}"
    sample = Sample(prompt=prompt, difficulty=difficulty, reasoning="\n".join(facts), response=summary,
                    ground_truth=summary, extra={"kind": kind})
    if rouge_l(sample.response, sample.ground_truth) != 1.0:  # certified by the reward that scores it
        raise RuntimeError(f"summary reference does not score 1.0 against itself: {summary!r}")
    return sample


def generate_summary(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` summarisation rows of `split` ("train"/"test"), levels 1..3 in turn; same args, same rows."""
    return generate_rows("summary", "summary", "rule", sample_summary, LEVELS, num_rows, split, seed)
