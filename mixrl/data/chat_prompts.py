"""Synthetic open-ended chat prompts for reward-model scoring, with preference pairs (`ability="chat"`).

Four kinds of request, by difficulty: 1 = write a short note (thank / invite / remind / congratulate /
apologise), 2 = explain a concept simply or give advice, 3 = summarise a short given text in one sentence.
Rows are scored by a reward model (`reward_model.style = "model"`); `ground_truth` is a reference answer.

For training that reward model, `extra_info` also carries a preference pair:
- `chosen`: a good response (the reference answer);
- `rejected`: a clearly worse one, of the kind named in `rejected_kind`, rotating through
  off_topic (answers another request), truncated (cut mid-sentence), rude, repetitive (one sentence
  over and over) and ignores_request (talks around the request without doing it);
`hard_negatives` adds pairs against two reward hacks seen in GRPO runs (the wrong person or gift; padding).
`extra_info.task` names the request kind; `reasoning` is a two-line plan.

Run: `python -c "from mixrl.data.chat_prompts import generate_chat; print(generate_chat(3, 'train', 0))"`.

>>> row = generate_chat(1, "train", seed=0)[0]
>>> row["extra_info"]["chosen"] == row["reward_model"]["ground_truth"] != row["extra_info"]["rejected"]
True
"""

from __future__ import annotations

import random
import re
from typing import Any

from mixrl.data.rows import Sample, generate_rows

LEVELS = (1, 2, 3)
REJECTED_KINDS = ("off_topic", "truncated", "rude", "repetitive", "ignores_request")

NAMES = ("Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jada", "Kai", "Lena", "Milo",
         "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki")
DAYS = ("on Saturday", "on Friday evening", "next Sunday", "on Monday morning", "next Wednesday")

# ---- kind 1: notes ------------------------------------------------------------------------------------

GIFTS = ("book", "scarf", "plant", "box of chocolates", "mug", "photo album", "cookbook")
EVENTS = ("birthday party", "garden barbecue", "movie night", "graduation dinner", "picnic", "game night")
REMINDERS = ("the team meeting", "the dentist appointment", "the library books", "the rent payment",
             "the school concert")
ACHIEVEMENTS = ("the new job", "the wedding", "passing the exam", "the new baby", "finishing the marathon",
                "the new house")
MISSED = ("the dinner", "the concert", "our call", "the game", "the meeting")


def _note(rng: random.Random) -> tuple[str, str, str, str]:
    """(request, reference answer, plan, topic) for a note."""
    name = rng.choice(NAMES)
    purpose = rng.randrange(5)
    if purpose == 0:
        gift = rng.choice(GIFTS)
        ask = f"thanking them for the {gift}"
        body = (f"Thank you so much for the lovely {gift}. It was very kind of you to think of me, and it "
                "made my week. I hope we can catch up again soon.")
    elif purpose == 1:
        event, day = rng.choice(EVENTS), rng.choice(DAYS)
        ask = f"inviting them to a {event} {day}"
        body = (f"I am having a {event} {day} and I would love for you to come. There will be good food and "
                "good company. Please let me know if you can make it.")
    elif purpose == 2:
        thing, day = rng.choice(REMINDERS), rng.choice(DAYS)
        ask = f"reminding them about {thing} {day}"
        body = (f"Just a friendly reminder about {thing} {day}. Please make a note of it so it does not slip "
                "your mind. Let me know if anything changes.")
    elif purpose == 3:
        what = rng.choice(ACHIEVEMENTS)
        ask = f"congratulating them on {what}"
        body = (f"Congratulations on {what}! You worked hard for this and you truly deserve it. I am so happy "
                "for you and cannot wait to celebrate together.")
    else:
        what = rng.choice(MISSED)
        ask = f"apologising for missing {what}"
        body = (f"I am really sorry that I missed {what}. I know it mattered to you, and I should have let you "
                "know sooner. I would love to make it up to you soon.")
    sign = rng.choice(("Best wishes", "Warm regards", "Take care", "See you soon"))
    return (
        f"Write a short note to {name} {ask}.",
        f"Dear {name},\n\n{body}\n\n{sign}",
        f"The user wants a short note to {name} {ask}.\nGreet {name}, say the main point kindly, and sign off.",
        f"a note to {name}",
    )


# ---- kind 2a: explanations ----------------------------------------------------------------------------

CONCEPTS = {
    "why the sky is blue": "Sunlight looks white, but it is a mix of all colours. When it passes through the "
    "air, tiny gas particles scatter blue light much more than red light. That scattered blue light reaches "
    "our eyes from every direction, so the whole sky looks blue.",
    "how a rainbow forms": "A rainbow forms when sunlight shines through raindrops. Each drop bends the light, "
    "splits it into its colours and reflects it back toward you. Each colour bends by a slightly different "
    "amount, so the colours spread out into a curved band.",
    "what photosynthesis is": "Photosynthesis is how plants make their own food. They take in sunlight, water "
    "from the soil and carbon dioxide from the air, and turn them into sugar. Along the way they release "
    "oxygen, which is the air we breathe.",
    "how a vaccine works": "A vaccine shows your immune system a harmless piece or copy of a germ. Your body "
    "learns to recognise it and builds defences. If the real germ ever shows up, your body is ready to fight "
    "it off quickly.",
    "what gravity is": "Gravity is the pull that every object with mass has on every other object. The Earth "
    "is very heavy, so its pull keeps us on the ground and makes dropped things fall. The same pull keeps the "
    "Moon travelling around the Earth.",
    "why we need sleep": "Sleep gives the body and the brain time to rest and repair. While we sleep, the brain "
    "sorts and stores what we learned during the day. Without enough sleep it is harder to focus, stay "
    "healthy and keep a good mood.",
    "what a budget is": "A budget is a plan for your money. You write down how much money comes in and decide "
    "in advance how much goes to things like food, rent and savings. It helps you avoid spending more than "
    "you have.",
    "how a compass works": "A compass has a small magnetic needle that can spin freely. The Earth acts like a "
    "giant magnet, and the needle lines up with its magnetic field. That is why one end of the needle always "
    "points roughly north.",
    "why leaves change colour in autumn": "Leaves are green because of chlorophyll, which plants use to make "
    "food. In autumn, with less sunlight and colder days, trees stop making chlorophyll. The green fades and "
    "the yellow and orange colours that were hidden underneath show through.",
    "what recycling is": "Recycling means turning used materials into new products instead of throwing them "
    "away. Paper, glass, metal and some plastics are collected, cleaned and made into new things. It saves "
    "resources and reduces the rubbish that ends up in landfills.",
    "how bread rises": "Bread dough contains yeast, a tiny living fungus. The yeast feeds on sugar in the flour "
    "and gives off carbon dioxide gas. The gas makes small bubbles that get trapped in the stretchy dough, so "
    "the dough puffs up.",
    "what the internet is": "The internet is a huge network that connects computers all over the world. When "
    "you open a website, your device sends a request through this network to another computer, which sends "
    "the page back. It works a bit like a postal system for information.",
    "why the moon has phases": "The Moon does not make its own light; it reflects sunlight. As the Moon travels "
    "around the Earth, we see different amounts of its sunlit side. That is why it seems to grow from a thin "
    "crescent to a full moon and shrink back again.",
    "what inflation is": "Inflation means that prices rise over time, so the same amount of money buys less. "
    "If a loaf of bread cost one dollar last year and costs more now, that is inflation. A little inflation "
    "is normal in a growing economy.",
    "how a thermometer works": "A simple thermometer holds a liquid that expands when it warms up and shrinks "
    "when it cools down. The liquid sits in a thin tube next to a printed scale. As the temperature changes, "
    "the liquid moves up or down the scale and shows the reading.",
}
EXPLAIN_ASKS = ("Explain {c} in simple words.", "Can you explain {c} to a ten-year-old?",
                "I never really understood {c}. Can you explain it briefly?",
                "Give a short explanation of {c} for a beginner.", "Please explain {c} without jargon.",
                "In a few sentences, explain {c}.")
PREFIXES = ("", "Quick question. ", "I am studying for a test. ", "My kid asked me about this. ",
            "I was curious today. ", "Hi! ", "For a school project: ")


def _explain(rng: random.Random) -> tuple[str, str, str, str]:
    concept = rng.choice(sorted(CONCEPTS))
    ask = rng.choice(PREFIXES) + rng.choice(EXPLAIN_ASKS).format(c=concept)
    return (
        ask,
        CONCEPTS[concept],
        f"The user wants a simple explanation of {concept}.\nUse everyday words, give the main idea first, "
        "then one concrete detail.",
        concept,
    )


# ---- kind 2b: advice ----------------------------------------------------------------------------------

ADVICE = {
    "sleeping better": ("Go to bed and wake up at the same time every day, even on weekends.",
                        "Put screens away for half an hour before bed.",
                        "Keep your bedroom dark, quiet and a little cool.",
                        "Avoid coffee and other caffeine in the afternoon.",
                        "Get some daylight and exercise during the day."),
    "saving money each month": ("Move a fixed amount into savings on the day you get paid.",
                                "Track what you spend for a month to see where the money goes.",
                                "Cook at home more often instead of eating out.",
                                "Cancel subscriptions you no longer use.",
                                "Wait a day before any purchase you did not plan."),
    "studying for an exam": ("Start early and spread your study over several short sessions.",
                             "Test yourself with practice questions instead of only rereading notes.",
                             "Explain the main ideas out loud as if teaching someone else.",
                             "Take short breaks to keep your focus fresh.",
                             "Get a full night of sleep before the exam."),
    "staying focused while working from home": ("Set up a fixed place that you only use for work.",
                                                 "Plan the day's three most important tasks each morning.",
                                                 "Turn off notifications while you work on a task.",
                                                 "Work in blocks of time with short breaks in between.",
                                                 "Get dressed and start at the same time every day."),
    "starting to run": ("Begin with short runs mixed with walking breaks.",
                        "Run slowly enough that you could still hold a conversation.",
                        "Add a little more distance each week, not all at once.",
                        "Wear comfortable shoes that fit well.",
                        "Rest on the days between runs so your body can adapt."),
    "keeping houseplants alive": ("Check the soil with your finger and water only when it feels dry.",
                                  "Place each plant where it gets the amount of light it likes.",
                                  "Use pots with holes so extra water can drain away.",
                                  "Wipe dust off the leaves now and then.",
                                  "Start with easy plants such as pothos or snake plants."),
    "preparing for a job interview": ("Read about the company and the role before the day.",
                                      "Prepare short stories about times you solved a problem.",
                                      "Practise your answers out loud with a friend.",
                                      "Prepare two or three questions to ask the interviewer.",
                                      "Plan your route and arrive a few minutes early."),
    "making friends in a new city": ("Join a club or class around something you enjoy.",
                                     "Say yes to invitations, even small ones.",
                                     "Volunteer for a local cause you care about.",
                                     "Visit the same café or gym regularly so faces become familiar.",
                                     "Follow up with people you meet and suggest a simple plan."),
    "reducing screen time": ("Check your phone's screen-time report to see where the hours go.",
                             "Keep your phone out of the bedroom at night.",
                             "Turn off notifications from apps that are not essential.",
                             "Replace one scrolling habit with a walk or a book.",
                             "Set specific times of day for checking messages."),
    "cooking more meals at home": ("Plan the week's meals before you go shopping.",
                                   "Start with a few simple recipes you can repeat.",
                                   "Cook larger batches and keep leftovers for lunch.",
                                   "Keep basics such as rice, pasta, eggs and frozen vegetables at home.",
                                   "Cook with a friend or family member to make it more fun."),
    "learning a new language": ("Practise a little every day instead of a lot once a week.",
                                "Learn the most common words and phrases first.",
                                "Listen to podcasts or music in the language.",
                                "Find a conversation partner and speak from the start.",
                                "Do not worry about mistakes; they are part of learning."),
    "keeping a tidy room": ("Give every item a fixed place where it belongs.",
                            "Spend ten minutes tidying at the end of each day.",
                            "Put things away right after you use them.",
                            "Give away things you have not used in a year.",
                            "Use boxes or baskets to group small items."),
}
ADVICE_ASKS = ("Give me some advice on {p}.", "What are your best tips for {p}?",
               "I need help with {p}. What should I do?", "How should I go about {p}?",
               "Any suggestions for {p}?")
WHO = ("", "I am a student. ", "I am very busy. ", "I am a complete beginner. ", "I work night shifts. ",
       "I have tried before and failed. ", "Hello! ")


def _advice(rng: random.Random) -> tuple[str, str, str, str]:
    problem = rng.choice(sorted(ADVICE))
    ask = rng.choice(WHO) + rng.choice(ADVICE_ASKS).format(p=problem)
    tips = rng.sample(ADVICE[problem], 3)
    answer = (f"Here are a few tips for {problem}:\n\n"
              + "\n".join(f"{i}. {tip}" for i, tip in enumerate(tips, 1))
              + "\n\nStart with one of them and add the others once it feels easy.")
    return (
        ask,
        answer,
        f"The user wants practical advice on {problem}.\nGive three clear tips in a short numbered list.",
        problem,
    )


# ---- kind 3: summaries --------------------------------------------------------------------------------

TOWNS = ("Millbrook", "Ashford", "Riverton", "Lakeside", "Oakridge", "Hillcrest", "Westfield", "Brookvale")
SHOPS = {
    "bakery": ("selling fresh bread early in the morning", "baking cakes for local birthdays"),
    "bookshop": ("hosting weekly reading evenings", "running a book club for teenagers"),
    "bike repair shop": ("offering free repairs for children's bikes", "teaching repair classes on Sundays"),
    "coffee shop": ("playing live music on Friday nights", "roasting its own coffee beans"),
    "flower shop": ("delivering bouquets by bicycle", "running flower-arranging workshops"),
}
TEAMS = ("football team", "basketball team", "hockey team", "netball team")
FOCUSES = ("passing and teamwork", "fitness and speed", "defence", "set pieces")
PROBLEMS = {
    "litter in the park": "weekly clean-ups",
    "the lack of activities for children": "free afternoon games",
    "traffic outside the school": "a walking bus for pupils",
    "the loneliness of older neighbours": "regular visits and phone calls",
}
SUMMARY_ASKS = ("Summarise the following text in one sentence.", "Give a one-sentence summary of this text.",
                "What is the main point of this text? Answer in one sentence.")


def _summary(rng: random.Random) -> tuple[str, str, str, str]:
    name, town = rng.choice(NAMES), rng.choice(TOWNS)
    story = rng.randrange(3)
    if story == 0:
        shop = rng.choice(sorted(SHOPS))
        action = rng.choice(SHOPS[shop])
        year, n, k = rng.randint(2005, 2022), rng.randint(40, 300), rng.randint(2, 12)
        text = (f"{name} opened a small {shop} in {town} in {year}. At first only a few customers came each "
                f"week. Then {name} started {action}, and people began to talk about the {shop}. Today it serves "
                f"about {n} customers every day and employs {k} people.")
        summary = (f"{name}'s {shop} in {town} grew from a few customers a week to about {n} a day after "
                   f"{name} started {action}.")
        topic = f"{name}'s {shop}"
    elif story == 1:
        team, focus = rng.choice(TEAMS), rng.choice(FOCUSES)
        g = rng.randint(10, 20)
        w = rng.randint(g // 2 + 1, g)
        text = (f"The {town} {team} lost most of its games last season. Over the summer the coach, {name}, "
                f"changed the training plan and focused on {focus}. This season the team has won {w} of its {g} "
                "games and is near the top of the league.")
        summary = (f"After coach {name} refocused training on {focus}, the {town} {team} went from losing most "
                   f"games to winning {w} of {g} this season.")
        topic = f"the {town} {team}"
    else:
        problem = rng.choice(sorted(PROBLEMS))
        months = rng.randint(3, 12)
        text = (f"Residents of {town} were unhappy about {problem}. A group of volunteers led by {name} "
                f"organised {PROBLEMS[problem]} every {rng.choice(('Saturday', 'Sunday', 'Wednesday'))}. After "
                f"{months} months the town reported a clear improvement, and the council now supports the group.")
        summary = (f"Volunteers led by {name} tackled {problem} in {town} with {PROBLEMS[problem]}, and after "
                   f"{months} months the improvement won council support.")
        topic = f"{problem} in {town}"
    return (
        f"{rng.choice(SUMMARY_ASKS)}\n\n{text}",
        summary,
        "The user wants a one-sentence summary.\nKeep who, what changed and the result; drop the details.",
        topic,
    )


# ---- rejected responses -------------------------------------------------------------------------------

RUDE = ("That is a silly thing to ask. Look it up yourself.",
        "I do not have time for this. Figure it out on your own.",
        "Why would anyone ask that? Stop wasting my time.",
        "Honestly, this is boring. Ask someone else.")


def _rejected(rng: random.Random, kind: str, task: str, request: str, answer: str, topic: str) -> str:
    if kind == "off_topic":
        other = rng.choice([k for k in _KINDS if k != task])
        return _KINDS[other](rng)[1]
    if kind == "truncated":
        words = answer.split(" ")
        cut = max(2, len(words) * 2 // 5)
        return " ".join(words[:cut]).rstrip(".,;:!?")
    if kind == "rude":
        return rng.choice(RUDE)
    if kind == "repetitive":
        lines = [line for line in answer.split("\n") if line.strip() and not line.startswith("Dear ")]
        first = re.split(r"(?<=[.!?:])\s+", lines[0])[0]  # the first sentence, said again and again
        return " ".join([first] * rng.randint(4, 6))
    if kind == "ignores_request":
        if task == "summary":
            return request.split("\n\n", 1)[1]  # copies the text back instead of summarising it
        return rng.choice((
            f"That is an interesting request about {topic}. Many people have wondered about this before.",
            f"People ask about {topic} all the time. There is a lot that could be said about it.",
        ))
    raise ValueError(f"unknown rejected kind {kind!r}")


_KINDS = {"note": _note, "explain": _explain, "advice": _advice, "summary": _summary}
_BY_LEVEL = {1: ("note",), 2: ("explain", "advice"), 3: ("summary",)}


def sample_chat(rng: random.Random, difficulty: int) -> Sample:
    """One open-ended request with a reference answer and a (chosen, rejected) pair."""
    if difficulty not in _BY_LEVEL:
        raise ValueError(f"chat difficulty must be in {LEVELS}, got {difficulty}")
    task = rng.choice(_BY_LEVEL[difficulty])
    request, answer, plan, topic = _KINDS[task](rng)
    kind = rng.choice(REJECTED_KINDS)
    return Sample(
        prompt=request,
        difficulty=difficulty,
        reasoning=plan,
        response=answer,
        ground_truth=answer,
        extra={"task": task, "chosen": answer, "rejected": _rejected(rng, kind, task, request, answer, topic),
               "rejected_kind": kind},
    )


def generate_chat(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` open-ended chat rows of `split`, levels 1..3 in turn; same args, same rows."""
    return generate_rows("chat", "chat", "model", sample_chat, LEVELS, num_rows, split, seed)


HARD_NEGATIVE_KINDS = ("wrong_details", "padded")


def hard_negatives(rows: list[dict[str, Any]], seed: int) -> list[dict[str, str]]:
    """Two more preference pairs per chat row, against the reward hacks a policy finds in a reward model trained
    on the rows' own pairs alone ({"prompt", "chosen", "rejected", "rejected_kind"}, prompt = the last turn):

    - wrong_details: the reference answer of another request of the same kind (a note to someone else, for another
      gift or event): fluent and on-format, but not what was asked;
    - padded: the reference answer followed by two to four sentences of other answers: longer, and worse for it.

    Measured without them (issue 15): a GRPO policy raised the reward model's held-out score from -1.4 to +1.8
    while its ROUGE-L against the references fell from 0.87 to 0.45, by writing longer notes of stock phrases to the
    wrong person. Built from the rows (same rows and seed, same pairs), so the rows themselves are unchanged.

    >>> rows = generate_chat(6, "train", seed=0)
    >>> pairs = hard_negatives(rows, seed=0)
    >>> len(pairs) == 2 * len(rows) and all(p["chosen"] != p["rejected"] for p in pairs)
    True
    """
    rng = random.Random(f"chat-hard-negatives:{seed}")
    answers = [(r["extra_info"]["task"], r["extra_info"]["chosen"]) for r in rows]
    sentences = [s for _, a in answers for s in re.split(r"(?<=[.!?])\s+", a.replace("\n", " ")) if len(s.split()) > 3]
    out = []
    for row in rows:
        prompt, task, chosen = row["prompt"][-1]["content"], row["extra_info"]["task"], row["extra_info"]["chosen"]
        siblings = [a for t, a in answers if t == task and a != chosen]
        if siblings:
            out.append({"prompt": prompt, "chosen": chosen, "rejected": rng.choice(siblings), "rejected_kind": "wrong_details"})
        extra = [s for s in rng.sample(sentences, min(len(sentences), 4)) if s not in chosen][: rng.randint(2, 4)]
        if extra:
            out.append({"prompt": prompt, "chosen": chosen, "rejected": chosen.rstrip() + " " + " ".join(extra),
                        "rejected_kind": "padded"})
    return out


def chat_preference_pairs(num_rows: int, split: str, seed: int, with_hard_negatives: bool = True) -> list:
    """Reward-model training pairs (`reward_services.train.PreferencePair`) from `num_rows` chat rows of `split`:
    each row's own pair, and `with_hard_negatives` its two `hard_negatives` pairs."""
    from reward_services.train import PreferencePair, pairs_from_rows

    rows = generate_chat(num_rows, split, seed)
    extra = hard_negatives(rows, seed) if with_hard_negatives else []
    return pairs_from_rows(rows) + [PreferencePair(p["prompt"], p["chosen"], p["rejected"]) for p in extra]
