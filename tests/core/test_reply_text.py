"""`reply_text`: hand-written replies for every rule, edge cases, and the never-raise contract."""

# The scenario table keeps each mail body on one line, however long.
# ruff: noqa: E501

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

import shared.core.reply_text as module
from shared.core.reply_text import reply_text


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    expected: str


QUOTE = "\n> Hi,\n> are we still on for Friday?\n"

CASES: list[Case] = [
    # --- "On <date>, <name> wrote:" in its forms and languages -------------------------------
    Case(
        "en-gmail",
        "Sure, see you then.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <m@x.com> wrote:\n" + QUOTE,
        "Sure, see you then.",
    ),
    Case("en-apple", "Sure.\n\nOn Apr 3, 2012, at 4:19 PM, bob wrote:\n" + QUOTE, "Sure."),
    Case(
        "en-no-colon",
        "Sure.\n\nOn Wed, 14 Nov 2018 08:14:43 -0200 John Doe <john@doe.com> wrote\n\nWhen?",
        "Sure.",
    ),
    Case("en-you-wrote", "Sure.\n\nOn Nov 26, 2013 you wrote:\n\nThis is my quote.", "Sure."),
    Case(
        "en-wrapped-2",
        "Sure.\n\nOn Mon, Aug 26, 2019 at 4:37 PM The Hiring Engine <\nlong.address@example.com> wrote:\n"
        + QUOTE,
        "Sure.",
    ),
    Case(
        "en-wrapped-3",
        "Sure.\n\nOn Dec 16, 2011, at 12:47 PM, Corey Donohoe\n<reply@example.com>\nwrote:\n"
        + QUOTE,
        "Sure.",
    ),
    Case(
        "en-wrapped-date",
        "Sure.\n\nOn Nov 21, 2014,\nat 10:18,\nJohn Doe <john@doe.com> wrote:\n" + QUOTE,
        "Sure.",
    ),
    Case(
        "en-no-blank-line",
        "Sure, thanks.\nOn Dec 15, 2024, at 3:00 PM, John <john@example.com> wrote:\n" + QUOTE,
        "Sure, thanks.",
    ),
    Case(
        "en-user-line-starts-with-on",
        "On my side all is fine.\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <\nm@x.com> wrote:\n"
        + QUOTE,
        "On my side all is fine.",
    ),
    Case(
        "en-zoho",
        "Fine.\n\n---- On Wed, 24 Feb 2021 14:02:50 +0530 john@gmail.com wrote ----\n\nJava sucks",
        "Fine.",
    ),
    Case(
        "de",
        "Passt.\n\nAm 13.12.2017 um 21:11 schrieb Hans Müller <hans@example.de>:\n" + QUOTE,
        "Passt.",
    ),
    Case(
        "de-hat-geschrieben",
        "Passt.\n\nAm Mo., 15. Jan. 2024 um 14:30 Uhr hat Hans <h@x.de> geschrieben:\n" + QUOTE,
        "Passt.",
    ),
    Case(
        "fr",
        "D'accord.\n\nLe 15 janv. 2024 à 14:30, Pierre Dubois <pierre@example.fr> a écrit :\n"
        + QUOTE,
        "D'accord.",
    ),
    Case(
        "fr-wrapped",
        "D'accord.\n\nLe lun. 15 nov. 2021 à 19:42, John - Acme <john@acme.example>\na écrit :\n\nEtiam non.",
        "D'accord.",
    ),
    Case(
        "es",
        "De acuerdo.\n\nEl lun, 15 ene 2024 a las 14:30, Juan Pérez (<juan@example.es>) escribió:\n"
        + QUOTE,
        "De acuerdo.",
    ),
    Case(
        "it",
        "Va bene.\n\nIl giorno lun 15 gen 2024 alle ore 14:30 Mario Rossi <mario@example.it> ha scritto:\n"
        + QUOTE,
        "Va bene.",
    ),
    Case(
        "it-wrapped",
        "Va bene.\n\nIl giovedì, 8 dicembre 2016, Company Questions <q@example.com>\nha scritto:\n"
        + QUOTE,
        "Va bene.",
    ),
    Case(
        "nl",
        "Prima.\n\nOp 12 december 2016 19:05 schreef Jan Jansen <\njan@example.nl>:\n" + QUOTE,
        "Prima.",
    ),
    Case(
        "pt",
        "Combinado.\n\nEm 10 de julho de 2017 às 16:32:35, João Silva (\njoao@example.pt) escreveu:\n\nOlá!",
        "Combinado.",
    ),
    Case(
        "sv",
        "Okej.\n\nDen 15 jan. 2024 kl. 14:30 skrev Sven Svensson <sven@example.se>:\n" + QUOTE,
        "Okej.",
    ),
    Case(
        "no-gmail-lone-colon",
        "Ok.\n\ntir. 18. apr. 2017 kl. 13:09 skrev Test user <test@example.com\n>:\n" + QUOTE,
        "Ok.",
    ),
    Case("pl", "Dobrze.\n\nW dniu 15.01.2024 o 14:30, Jan Kowalski pisze:\n" + QUOTE, "Dobrze."),
    Case(
        "pl-uzytkownik",
        "Dobrze.\n\nW dniu 2017-01-09 11:59:39 użytkownik Jan <jan@example.pl> napisał:\n\nTekst.",
        "Dobrze.",
    ),
    Case(
        "ru",
        "Хорошо.\n\n15 января 2024 г., 14:30, Иван Петров <ivan@example.ru> пишет:\n" + QUOTE,
        "Хорошо.",
    ),
    Case(
        "ru-gmail",
        "Хорошо.\n\nср, 30 апр. 2025 г. в 15:19, John Doe <doe@example.com>:\n\nпривет",
        "Хорошо.",
    ),
    Case(
        "ru-android",
        'Hello\n02.04.2012 14:20 пользователь "bob@example.org" <\nbob@example.org> написал:\n\n> Hi\n',
        "Hello",
    ),
    Case(
        "ja",
        "了解です。\n\n2024年1月15日(月) 14:30 山田太郎 <taro@example.jp>:\n" + QUOTE,
        "了解です。",
    ),
    Case(
        "ja-kakimashita",
        "了解です。\n\n2024/01/15 14:30、山田太郎さんは書きました:\n" + QUOTE,
        "了解です。",
    ),
    Case(
        "zh", "好的。\n\n在 2024年1月15日 14:30，张三 <zhang@example.cn> 写道：\n" + QUOTE, "好的。"
    ),
    Case(
        "fi",
        "Kiitos.\n\npe 20. lokakuuta 2017 klo 17.50 John Coe\n<john@example.fi> kirjoitti:\n\nThanks!",
        "Kiitos.",
    ),
    Case("hu", 'Köszönöm!\n\n2013.02.08. 7:31 keltezéssel, "Eszter" írta:\n' + QUOTE, "Köszönöm!"),
    Case(
        "ko",
        "네.\n\n2024년 1월 15일 (월) 오후 2:30, 홍길동 <hong@example.kr>님이 작성:\n" + QUOTE,
        "네.",
    ),
    Case(
        "dated-address-colon",
        "Ok.\n\n2017-11-24 16:32 GMT+01:00 Baptiste - Crisp <b@example.chat>:\n\nTest",
        "Ok.",
    ),
    Case(
        "attribution-inside-quote",
        "Hello\n> On 22 Aug 2015, at 19:21, Adam <adam@example.com> wrote:\n>\n> Hi there!\n",
        "Hello",
    ),
    # --- Outlook header blocks and separators ----------------------------------------------------
    Case(
        "outlook-en",
        "Hello\n\nFrom: xxx@example.org [mailto:xxx@example.org]\nSent: March-09-12 4:22 PM\nTo: Dan Le\nSubject: Loop\n\nHi dan",
        "Hello",
    ),
    Case(
        "outlook-original-message",
        "Hello\n\n-----Original Message-----\nFrom: bob <bob@example.com>\nSent: Mon, Apr 2, 2012 5:49 pm\nSubject: Test\n\nHi",
        "Hello",
    ),
    Case(
        "outlook-original-message-bare",
        "Hello\n\n----- Original Message -----\n\nHi John,\nold text",
        "Hello",
    ),
    Case(
        "outlook-de",
        "Danke.\n\nVon: Max Mustermann <max@example.de>\nGesendet: Donnerstag, 23. März 2023 17:11\nAn: Erika <e@example.de>\nBetreff: AW: Frage\n\nAlt.",
        "Danke.",
    ),
    Case(
        "outlook-de-original",
        "Danke.\n\n-----Ursprüngliche Nachricht-----\nVon: Max <max@example.de>\nAn: Erika <e@example.de>\n\nAlt.",
        "Danke.",
    ),
    Case(
        "outlook-fr",
        "Merci.\n\nDe : Company Questions<mailto:q@example.com>\nEnvoyé : jeudi 15 décembre 2016 09:35\nÀ : someone@example.fr\nObjet : Question\n\nAncien.",
        "Merci.",
    ),
    Case(
        "outlook-fr-indented",
        "Merci.\n\n      De : Someone <s@example.fr>\n À : mycompany <q@example.com>\n Envoyé le : Mercredi 30 novembre 2016 10h30\n Objet : Re: Question\n\nAncien.",
        "Merci.",
    ),
    Case(
        "outlook-es",
        "Gracias.\n\nDe: Juan <juan@example.es>\nEnviado: lunes, 15 de enero de 2024 14:30\nPara: Ana <ana@example.es>\nAsunto: Pregunta\n\nViejo.",
        "Gracias.",
    ),
    Case(
        "outlook-underscores",
        "Thanks.\n________________________________\nFrom: The Hiring Engine <hire@example.com>\nSent: Wednesday, September 25, 2019 5:45 PM\nTo: kevin@example.com\nSubject: Your application\n\nOld.",
        "Thanks.",
    ),
    Case(
        "outlook-bold",
        "Outlook with a reply\n\n\n ------------------------------\n\n*From:* Google Apps Sync Team [mailto:noreply@google.com]\n*Sent:* Thursday, February 09, 2012 1:36 PM\n*To:* jow@example.com\n*Subject:* Updated!\n\nDear user,",
        "Outlook with a reply",
    ),
    Case(
        "outlook-wrapped-from",
        "Hi.\n\nFrom: Human Resources \n<hr@example.com> \nSent: Monday, August 26, 2019 4:37 PM\nTo: Abhishek <a@example.com>\nSubject: New\n\nOld.",
        "Hi.",
    ),
    Case(
        "outlook-message-du",
        'Ok.\n\n====\n\nMessage du : 12/12/2016 13:20\nDe : "Company" <q@example.com>\nA : m@example.fr\nSujet : porta\n\nAncien.',
        "Ok.",
    ),
    Case(
        "hotmail-quoted-headers",
        "\nHello\n\n> Subject: Test\n> From: bob@example.org\n> Date: Mon, 2 Apr 2012 17:44:22 +0400\n> \n> Hi\n \t\t ",
        "Hello",
    ),
    # --- forwards: the note and the forwarded mail are the content, the forward's headers are not --
    Case(
        "forward-gmail",
        "See the forwarded message below.\n\n---------- Forwarded message ---------\nFrom: John Smith <john@example.com>\nDate: Mon, Dec 15, 2024 at 3:00 PM\nSubject: Update\n\nForwarded content.",
        "See the forwarded message below.\n\nForwarded content.",
    ),
    Case(
        "forward-apple",
        "FYI, look at this.\n\nBegin forwarded message:\n\nFrom: John <john@example.com>\nSubject: Update\n\nContent.",
        "FYI, look at this.\n\nContent.",
    ),
    Case(
        "forward-de",
        "Zur Info.\n\n-------- Weitergeleitete Nachricht --------\nBetreff: Update\nDatum: Mon, 15 Dec 2024\n\nInhalt.",
        "Zur Info.\n\nInhalt.",
    ),
    Case(
        "forward-outlook-fw-subject",
        "Please handle.\n\nFrom: Ivan <ivan@example.ru>\nSent: Monday, January 15, 2024 2:30 PM\nTo: Support <s@example.com>\nSubject: FW: Заказ 42\n\nЗаказ не пришёл.",
        "Please handle.\n\nЗаказ не пришёл.",
    ),
    Case(
        "forward-bare-keeps-the-forwarded-mail",
        "---------- Forwarded message ---------\nFrom: 山田 <taro@example.jp>\nSubject: 請求書\n\n請求書を添付します。\n\nOn Mon, Jan 15, 2024 at 2:30 PM, Ann <ann@example.com> wrote:\n> 送ってください",
        "請求書を添付します。",
    ),
    Case(
        "forward-fr-then-reply-quote",
        "Pour info.\n\n-------- Message transféré --------\nSujet : Facture\nDate : lun. 15 janv. 2024\nDe : Anne <anne@example.fr>\n\nVoici la facture.",
        "Pour info.\n\nVoici la facture.",
    ),
    Case(
        "headers-pasted-above-the-text",
        "Od: Jan <jan@example.pl>\nWysłano: środa, 1 marca 2023 12:00\nDo: Anna <anna@example.pl>\nTemat: Re: Test\n\nCześć Anno,\n\nDnia 28 lutego 2023 14:00 Anna <anna@example.pl> napisał(a):\n> Cześć Janie,",
        "Cześć Anno,",
    ),
    # --- signatures ------------------------------------------------------------------------------
    Case("sig-dash-dash-space", "Thanks!\n\n-- \nJohn Doe\nACME", "Thanks!"),
    Case("sig-dash-dash", "Thanks!\n--\nrick", "Thanks!"),
    Case("sig-em-dash", "🎉\n\n—\nJohn Doe\nCEO", "🎉"),
    Case(
        "sig-iphone",
        "Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob <bob@example.com> wrote:\n\n> Hi",
        "Hello",
    ),
    Case("sig-android", "Ok\n\nSent from my Android device", "Ok"),
    Case("sig-samsung", "Ok\n\nSent from my Samsung Galaxy smartphone.", "Ok"),
    Case(
        "sig-outlook-ios",
        "Ok\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n________________________________\nFrom: X <x@example.com>\nSent: today\n\nOld",
        "Ok",
    ),
    Case("sig-fr-iphone", "D'accord\n\nEnvoyé de mon iPhone", "D'accord"),
    Case("sig-de-iphone", "Passt\n\nVon meinem iPhone gesendet", "Passt"),
    Case("sig-es-iphone", "Vale\n\nEnviado desde mi iPhone", "Vale"),
    Case(
        "sig-de-outlook-android",
        "Passt\n\nGesendet von Outlook für Android<https://aka.ms/AAb9ysg>\n\nHi there!",
        "Passt",
    ),
    Case(
        "sig-typeapp",
        "Hi.\n\nSent from TypeApp<http://www.typeapp.com/r?b=2621>\nOn Jun 17, 2017, at 14:15, V <v@example.com> wrote:\nOld",
        "Hi.",
    ),
    Case(
        "sig-double",
        "Thanks for your help!\n\nBest regards,\nJohn\n\n--\nJohn Doe\nSenior Developer\n\nSent from my iPhone",
        "Thanks for your help!\n\nBest regards,\nJohn",
    ),
    Case(
        "sig-mailing-list-footer",
        "Question?\n\n-Abhishek\n\n\n__\nriak-users mailing list\nriak-users@example.com",
        "Question?\n\n-Abhishek",
    ),
    # --- inline replies: the user's lines are kept, the quoted ones dropped ------------------------
    Case(
        "inline-after-attribution",
        "On Dec 15, 2024, at 2:00 PM, Jane <jane@example.com> wrote:\n> Option A?\n\nA is great.\n\n> Option B?\n\nB has drawbacks.",
        "A is great.\n\nB has drawbacks.",
    ),
    Case(
        "inline-no-attribution",
        "My points:\n\n> first quoted\n> block\n\nMy answer.\n\n> second quoted\n\nFinal thoughts.",
        "My points:\n\nMy answer.\n\nFinal thoughts.",
    ),
    Case("inline-bottom-post", "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi \nHello", "Hello"),
    Case(
        "inline-greeting-then-answers",
        "Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Abhishek wrote:\n> How do I clear a bucket?\n\nList the keys and delete each.\n\n> \n> -Abhishek\n",
        "Hi,\n\nList the keys and delete each.",
    ),
    Case(
        "inline-wrapped-quote-is-not-an-answer",
        'Ok.\n\nOp 12 december 2016 19:05 schreef Jan <jan@example.nl>:\n\n> "In efficitur augue ac tristique ullamcorper. Aenean tincidunt ornare diam,\neget accumsan est viverra quis."\n>',
        "Ok.",
    ),
    Case("inline-short-quote-then-answer", "> Lunch?\nYes, at noon.", "Yes, at noon."),
    Case("inline-then-signature", "> Lunch?\n\nYes.\n\n-- \nJohn", "Yes."),
    # --- other quote markers, interleaved answers in order -------------------------------------------
    Case(
        "quote-pipe",
        "Да, подходит.\n\n| Привет,\n| встреча в пятницу?\n",
        "Да, подходит.",
    ),
    Case(
        "quote-guillemet-interleaved",
        "Bonjour,\n\n» Pouvez-vous venir lundi ?\n» Ou mardi ?\n\nLundi.\n\n» Et le matériel ?\n» Merci\n\nJe l'apporte.",
        "Bonjour,\n\nLundi.\n\nJe l'apporte.",
    ),
    Case(
        "quote-colon",
        "نعم، موافق.\n\n: هل يناسبك يوم الجمعة؟\n: شكرا\n",
        "نعم، موافق.",
    ),
    Case(
        "quote-pipe-after-attribution",
        "好的。\n\n在 2024年1月15日 14:30，张三 <zhang@example.cn> 写道：\n| 周五开会吗？\n| 谢谢",
        "好的。",
    ),
    # --- attribution lines without "wrote:" in localised date forms -----------------------------------
    Case(
        "attribution-de-date-no-verb",
        "Passt.\n\nAm 15.01.2024 um 14:30 Hans Müller <hans@example.de>\n> Hallo\n> Termin?",
        "Passt.",
    ),
    Case(
        "attribution-iso-date-address",
        "Ok.\n\n2024-01-15 14:30 GMT+01:00, Olga <olga@example.ru>\n> Здравствуйте",
        "Ok.",
    ),
    Case(
        "attribution-address-colon-no-date",
        "Sure.\n\nАнна Иванова <anna@example.ru>:\n> Когда?\n",
        "Sure.",
    ),
    Case(
        "attribution-ja-date-no-colon",
        "承知しました。\n\n2024年1月15日 14:30 山田太郎 <taro@example.jp>\n> よろしくお願いします",
        "承知しました。",
    ),
    Case(
        "attribution-fr-date-then-interleaved",
        "Le 15/01/2024 à 14:30, Anne <anne@example.fr>\n> Question 1 ?\nRéponse 1.\n> Question 2 ?\nRéponse 2.",
        "Réponse 1.\nRéponse 2.",
    ),
    Case(
        "attribution-mid-line-keeps-the-words-before",
        "Согласен On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi",
        "Согласен",
    ),
    Case(
        "attribution-after-dashes-mid-line",
        "ok\nbla - bla--- Am 04.04.2012 um 15:59 schrieb Hans <h@example.de>:\n> Hallo",
        "ok\nbla - bla",
    ),
    Case(
        "not-on-mid-line-in-a-sentence",
        "Thanks. On Monday we start.\n\nOn Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi",
        "Thanks. On Monday we start.",
    ),
    Case(
        "not-intro-sentence-above-quote",
        "I agree with this part.\n> We ship on Friday.\nGood.",
        "I agree with this part.\nGood.",
    ),
    Case(
        "not-markdown-table",
        "Results:\n| name | total |\n| Ann | 3 |\n\nDone.",
        "Results:\n| name | total |\n| Ann | 3 |\n\nDone.",
    ),
    Case(
        "not-single-pipe-or-colon-line",
        "Options:\n| only one\n\n: a label\nEnd.",
        "Options:\n| only one\n\n: a label\nEnd.",
    ),
    # --- things that look like markers but are the user's text ----------------------------------------
    Case(
        "not-on-sentence",
        "On the surface this looks like a header.\n\nOn the other hand, it is not.\nOn average, fine.",
        "On the surface this looks like a header.\n\nOn the other hand, it is not.\nOn average, fine.",
    ),
    Case(
        "not-wrote-in-url",
        'See https://example.com/on-date-someone-wrote-about-parsing\n\nPatterns like "wrote:" in them.',
        'See https://example.com/on-date-someone-wrote-about-parsing\n\nPatterns like "wrote:" in them.',
    ),
    Case(
        "not-sent-from-sentence",
        "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
        "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
    ),
    Case(
        "not-sent-from-mid-line",
        "The notification was sent from my iPhone app.\n\nNot Sent from my iPad.",
        "The notification was sent from my iPhone app.\n\nNot Sent from my iPad.",
    ),
    Case(
        "not-from-mid-line",
        "Emails come from: john@example.com\n\nThe data comes From: our database.",
        "Emails come from: john@example.com\n\nThe data comes From: our database.",
    ),
    Case(
        "not-markdown-rules",
        "Analysis:\n----\n\n1. Faster\n\n----\n\nDone.\n\n====\n\nMore.",
        "Analysis:\n----\n\n1. Faster\n\n----\n\nDone.\n\n====\n\nMore.",
    ),
    Case(
        "not-dash-list",
        "Please check:\n-- first point\n-- second point\n\nThanks!",
        "Please check:\n-- first point\n-- second point\n\nThanks!",
    ),
    Case(
        "not-hyphen-list-or-thanks",
        "Todo:\n- one\n- two\n\nThanks,\nAnn",
        "Todo:\n- one\n- two\n\nThanks,\nAnn",
    ),
    Case(
        "not-header-lines-without-sender",
        "Agenda\nDate: Monday\nTo: everyone\nSubject: budget",
        "Agenda\nDate: Monday\nTo: everyone\nSubject: budget",
    ),
    Case(
        "not-sent-from-the-office",
        "Done.\n\nSent from the office today\n\nBye",
        "Done.\n\nSent from the office today\n\nBye",
    ),
    Case(
        "sig-sent-from-app",
        "Done.\n\nSent from Mail for Windows\n\nFrom: X <x@example.com>\nSent: today",
        "Done.",
    ),
    Case(
        "outlook-block-after-header-lines-kept-before",
        "Hi.\nSubject: Test\nFrom: bob@example.org\nTo: me@example.org\n\nOld",
        "Hi.",
    ),
    Case(
        "not-colon-without-date",
        "I wanted to respond to your points:\n\nFine.",
        "I wanted to respond to your points:\n\nFine.",
    ),
    Case(
        "keeps-indentation",
        "List:\n\n   - how about bullets\n   - and another\n\nOn Fri, Feb 24, 2012 at 10:19 AM, <x@example.com> wrote:\n> Old",
        "List:\n\n   - how about bullets\n   - and another",
    ),
    # --- edge cases ------------------------------------------------------------------------------------
    Case("empty", "", ""),
    Case("blank", " \n\t\n  ", ""),
    # A body that is only quote has no new text.
    Case("only-quote", "> Hi\n> there\n", ""),
    Case(
        "only-attribution-and-quote",
        "On Mon, Apr 2, 2012 at 6:26 PM, Megan <m@x.com> wrote:\n> Hi\n",
        "",
    ),
    Case("only-pipe-quote", "| Привет\n| как дела?\n", ""),
    Case("only-signature", "-- \nJohn Doe\n", "--\nJohn Doe"),
    Case(
        "crlf",
        "Hello \r\n\r\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <m@x.com> wrote:\r\n> Hi\r\n",
        "Hello",
    ),
    Case(
        "no-quote-at-all",
        "Just a message.\n\nWith two paragraphs.   \n",
        "Just a message.\n\nWith two paragraphs.",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reply_text_scenarios(case: Case) -> None:
    assert reply_text(case.body) == case.expected


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_output_shape(case: Case) -> None:
    out = reply_text(case.body)
    assert "\r" not in out
    assert out == out.rstrip()
    assert all(line == line.rstrip() for line in out.split("\n"))
    # Empty only when the body has nothing new (blank, or all quote).
    assert bool(out) == bool(case.expected)


@pytest.mark.parametrize("languages", [None, [], ["de"], ["fr", "en"], ["xx"], ("zh",)])
def test_languages_argument(languages: list[str] | None) -> None:
    body = "Danke.\n\nAm 13.12.2017 um 21:11 schrieb Hans <hans@example.de>:\n> Hallo\n"
    assert reply_text(body, languages=languages) == "Danke."


def test_library_failure_falls_back_to_own_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, **_: object) -> None:
            raise RuntimeError("boom")

    monkeypatch.setattr(module, "EmailReplyParser", Broken)
    body = "Sure.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan <m@x.com> wrote:\n> Hi\n"
    assert reply_text(body) == "Sure."


def test_internal_failure_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: list[str]) -> list[str]:
        raise ValueError("boom")

    monkeypatch.setattr(module, "_scan", broken)
    assert reply_text("Hello\r\n\r\n> quoted\r\n") == "Hello\n\n> quoted"


def test_library_header_cuts_what_our_rules_do_not_see() -> None:
    lines = ["Hello", "", "On Monday May 1st Bob wrote:", "old text"]
    assert module._library_cut(lines, ("en",)) == ["Hello"]


def test_library_is_not_trusted_for_header_lines_without_sender() -> None:
    lines = ["Agenda", "Date: Monday", "To: everyone"]
    assert module._library_cut(lines, ("en",)) == lines


@pytest.mark.parametrize(
    "weird",
    ["\x00\x01", "\ud800 lone surrogate", ">" * 10_000, "\n" * 5000, "-- ", "—", "On wrote:"],
)
def test_odd_inputs_do_not_raise(weird: str) -> None:
    out = reply_text(weird)
    assert isinstance(out, str)
    if weird.strip() and not weird.startswith(">"):
        assert out


@pytest.mark.parametrize(
    "body",
    [
        "Hello there, this is a line of text in the reply body.\n" * 18_000,
        "x" * 1_000_000,
        "> quoted line of the original message, long enough\n" * 20_000,
        ("word " * 200 + "\n") * 1_000,
        "Top.\n\n" + "From: a\nTo: b\n" * 70_000,
        "| quoted line of the original message, long enough\n" * 20_000,
        "Top.\n\n" + "From: a <a@b.c>\nSent: x\nSubject: FW: y\n\nbody\n" * 20_000,
        "Top.\n\n" + "2024-01-15 14:30 Jan <jan@example.pl>\n: q\n: r\n" * 20_000,
    ],
    ids=[
        "many-lines",
        "one-line",
        "all-quoted",
        "long-lines",
        "headers",
        "pipes",
        "forwards",
        "intros",
    ],
)
def test_one_megabyte_finishes_quickly(body: str) -> None:
    assert len(body) >= 900_000
    start = time.perf_counter()
    out = reply_text(body)
    assert time.perf_counter() - start < 3.0
    # An all-quoted body has no new text; every other has some.
    assert bool(out) != body.startswith((">", "|"))
