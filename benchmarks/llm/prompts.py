"""The benchmark's prompts: chat questions that draw long answers, and a ~1,000-token system prompt.

Every server gets the same requests in the same order. A load request is one user message,
``"(#N) Answer in detail. QUESTION"``: N counts the requests of a server's run, so no two
requests are the same text (a prefix cache may reuse the chat template's default system
prompt they share, as it would in real traffic, but not a whole repeated prompt). With
SmolLM2's chat template (which adds its default system prompt) a request is 59-68 tokens,
62.6 on average (transformers' tokenizer of the GGUF, over 200 requests).

The prefix case sends :func:`system_prompt` (a support handbook: 995 tokens with the
template, 1,012-1,020 with a question; ``edition`` changes its first line, so each edition is
a fresh prefix) with one of :data:`PREFIX_QUESTIONS`.
"""

from __future__ import annotations

QUESTIONS = (
    "Explain step by step how a refrigerator keeps food cold, including what the compressor, "
    "the condenser and the coolant each do.",
    "Write a detailed beginner's guide to growing tomatoes on a small balcony, from choosing "
    "seeds to the first harvest.",
    "Describe the main causes of the French Revolution and how each of them contributed to "
    "the fall of the monarchy.",
    "Give me a complete one-week plan of healthy dinners for a family of four, with a short "
    "recipe for each day.",
    "Explain how a computer network sends a web page from a server to my browser, covering "
    "DNS, TCP and HTTP.",
    "Write a short story about a lighthouse keeper who finds a mysterious message in a "
    "bottle during a winter storm.",
    "What should I consider when buying my first used car? Please list every check I should "
    "do and explain why.",
    "Explain the water cycle to a ten-year-old, with examples from everyday life for each "
    "stage of the cycle.",
    "Describe how to prepare for a job interview at a software company, from research the "
    "week before to the follow-up email.",
    "Compare renewable energy sources such as solar, wind and hydroelectric power, giving the "
    "advantages and drawbacks of each.",
    "Write a detailed travel itinerary for three days in Rome, with museums, food and walks "
    "for each morning and afternoon.",
    "Explain how vaccines train the immune system to fight infections, and why booster doses "
    "are sometimes needed later.",
    "Give me detailed advice on how to start running as a complete beginner, including a "
    "training plan for the first month.",
    "Describe the life cycle of a star like our Sun, from its birth in a cloud of gas to its "
    "final stage as a white dwarf.",
    "Write a friendly letter to a new neighbour inviting them to a garden party, and describe "
    "the food and games you plan.",
    "Explain what inflation is, what causes it, and how central banks try to keep it under "
    "control with interest rates.",
)

PREFIX_QUESTIONS = (
    "A customer says their order arrived damaged. What exactly should I tell them?",
    "How long does a customer have to return an unopened item, and who pays the shipping?",
    "Can a customer change the delivery address after the order has shipped?",
    "What is the warranty on the Aurora desk lamp, and what does it not cover?",
    "A customer wants a refund to a different card than the one they paid with. Is that allowed?",
    "Which orders qualify for free express shipping during the winter campaign?",
    "How should I answer a customer who was charged twice for the same order?",
    "What do I do when a customer asks for the personal phone number of a courier?",
)

_PRODUCTS = (
    ("Aurora desk lamp", "two years", "the bulb and scratches from normal use"),
    ("Nimbus kettle", "one year", "limescale damage and a cracked lid"),
    ("Harbor backpack", "five years", "wear of the straps after heavy use"),
    ("Summit hiking boots", "two years", "worn soles and damage from drying on a heater"),
    ("Pebble wireless speaker", "one year", "water damage and a battery below 80 percent"),
)

_RULES = (
    "Greet the customer by name and thank them for writing before you answer the question.",
    "Never promise a delivery date that the tracking page does not show.",
    "Offer a replacement before a refund when the item is in stock, unless the customer "
    "clearly asks for their money back.",
    "Refunds go back to the card or account that paid for the order, never to another one.",
    "Items may be returned within 30 days of delivery when unopened, and within 14 days when "
    "opened; the company pays return shipping only for damaged or wrong items.",
    "Orders over 80 euros ship for free with standard delivery, which takes three to five "
    "working days; express delivery takes one to two days and costs 9 euros.",
    "During the winter campaign, from 1 December to 6 January, members of the loyalty club "
    "get free express shipping on orders over 50 euros.",
    "A delivery address can be changed until the order is packed; after that, the customer "
    "must ask the courier for a redirection on the tracking page.",
    "When a customer reports a damaged parcel, ask for a photo of the item and the box, then "
    "send a replacement at once without waiting for the return.",
    "When a customer was charged twice, check the payment log: a second charge that is only "
    "reserved disappears within five working days, a captured one is refunded the same day.",
    "Never share personal data of couriers, other customers or colleagues, and never ask a "
    "customer for their full card number or password.",
    "Escalate to a team lead any message that mentions a lawyer, the press, an injury or a "
    "safety risk, and tell the customer that a specialist will reply within one working day.",
    "Answer in the language the customer wrote in; if you cannot, answer in English and "
    "apologise for it in one short sentence.",
    "Close every answer with a short summary of what happens next and when.",
)


def system_prompt(edition: int) -> str:
    """The support handbook used as a shared system prompt (~1,000 tokens with the template)."""
    lines = [
        f"You are the customer support assistant of Northwind Home, handbook edition "
        f"{edition}. Answer in a warm, precise tone, in at most five sentences, and follow "
        "every rule of this handbook.",
        "",
        "General rules:",
    ]
    lines += [f"{i}. {rule}" for i, rule in enumerate(_RULES, start=1)]
    lines += ["", "Products and warranties:"]
    for name, years, excluded in _PRODUCTS:
        lines.append(
            f"- The {name} has a warranty of {years} from the delivery date. The warranty "
            f"covers defects in materials and workmanship; it does not cover {excluded}. For a "
            f"warranty claim the customer sends the order number and a photo or a short video "
            f"of the defect; an approved claim for the {name} is repaired or replaced free of "
            "charge, including shipping both ways."
        )
    lines += [
        "",
        "Tone examples:",
        "- Good: 'Thank you for letting us know, Maria. I am sorry the kettle arrived with a "
        "dent; a new one leaves our warehouse today, and you can keep or recycle the damaged "
        "one.'",
        "- Bad: 'Not our fault, complain to the courier.'",
        "",
        "If a question is not covered by this handbook, say that you will ask a colleague and "
        "that the customer will get an answer by email within one working day.",
    ]
    return "\n".join(lines)


def load_message(n: int) -> str:
    """The user message of the ``n``-th load request of a run (questions in turn, numbered)."""
    return f"(#{n}) Answer in detail. {QUESTIONS[n % len(QUESTIONS)]}"
