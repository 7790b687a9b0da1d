"""Fixed reference data the dataset draws from: names, districts, offerings, free-text templates.

Everything here is constant so that a dataset depends only on (seed, index). Changing any list
changes every generated store, so bump ``DATASET_VERSION`` in ``dataset.py`` with it.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

# The dataset's "today": usage is "this month", bills run up to the month before, every seeded
# date is at or before it. Fixed, so that stores do not depend on the day they were seeded.
AS_OF = dt.date(2026, 11, 20)
TZ = "+08:00"  # China Standard Time, the offset of every seeded timestamp

# About a hundred of the most common Chinese surnames, most common first (the generator skews its
# draws towards the front of the list), plus a few compound ones.
SURNAMES: tuple[str, ...] = (
    *(
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
        "魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
        "万钱严覃武戴莫孔向汤"
    ),
    "欧阳",
    "司马",
    "诸葛",
    "上官",
)

GIVEN_MALE: tuple[str, ...] = tuple(
    "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆帅旭龙林阳峰建国志博晨昊然轩睿泽天宏海亮成"
)
GIVEN_FEMALE: tuple[str, ...] = tuple(
    "芳娜敏静丽艳娟霞燕玲婷雪慧莹倩琳晶欣颖洁佳琪梅兰萍红月瑶怡涵悦萱诗雨思彤晓冰秀英蕾薇丹妍璐"
)
GIVEN_NEUTRAL: tuple[str, ...] = tuple("文嘉宁子一安心乐永春")


class Region(NamedTuple):
    """A real county-level district: its GB/T 2260 code and the address text that goes with it."""

    code: str
    province: str
    city: str
    district: str


def _regions(province: str, city: str, districts: str) -> list[Region]:
    out = []
    for item in districts.split():
        code, name = item.split(":")
        out.append(Region(code, province, city, name))
    return out


REGIONS: tuple[Region, ...] = tuple(
    _regions(
        "北京市",
        "北京市",
        "110101:东城区 110102:西城区 110105:朝阳区 110106:丰台区 110107:石景山区 "
        "110108:海淀区 110109:门头沟区 110111:房山区 110112:通州区 110113:顺义区 "
        "110114:昌平区 110115:大兴区",
    )
    + _regions(
        "天津市",
        "天津市",
        "120101:和平区 120102:河东区 120103:河西区 120104:南开区 120105:河北区 120106:红桥区",
    )
    + _regions(
        "上海市",
        "上海市",
        "310101:黄浦区 310104:徐汇区 310105:长宁区 310106:静安区 310107:普陀区 "
        "310109:虹口区 310110:杨浦区 310112:闵行区 310113:宝山区 310115:浦东新区",
    )
    + _regions(
        "重庆市",
        "重庆市",
        "500103:渝中区 500105:江北区 500106:沙坪坝区 500107:九龙坡区 500108:南岸区 500112:渝北区",
    )
    + _regions(
        "广东省",
        "广州市",
        "440103:荔湾区 440104:越秀区 440105:海珠区 440106:天河区 440111:白云区 "
        "440112:黄埔区 440113:番禺区",
    )
    + _regions(
        "广东省", "深圳市", "440303:罗湖区 440304:福田区 440305:南山区 440306:宝安区 440307:龙岗区"
    )
    + _regions("广东省", "佛山市", "440604:禅城区 440605:南海区 440606:顺德区")
    + _regions(
        "浙江省",
        "杭州市",
        "330102:上城区 330105:拱墅区 330106:西湖区 330108:滨江区 330109:萧山区 330110:余杭区",
    )
    + _regions("浙江省", "宁波市", "330203:海曙区 330212:鄞州区")
    + _regions(
        "江苏省",
        "南京市",
        "320102:玄武区 320104:秦淮区 320105:建邺区 320106:鼓楼区 320111:浦口区 "
        "320113:栖霞区 320114:雨花台区 320115:江宁区",
    )
    + _regions("江苏省", "苏州市", "320505:虎丘区 320506:吴中区 320507:相城区 320508:姑苏区")
    + _regions(
        "湖北省",
        "武汉市",
        "420102:江岸区 420103:江汉区 420104:硚口区 420105:汉阳区 420106:武昌区 420111:洪山区",
    )
    + _regions(
        "四川省", "成都市", "510104:锦江区 510105:青羊区 510106:金牛区 510107:武侯区 510108:成华区"
    )
    + _regions(
        "陕西省", "西安市", "610102:新城区 610103:碑林区 610104:莲湖区 610112:未央区 610113:雁塔区"
    )
    + _regions("山东省", "济南市", "370102:历下区 370103:市中区 370104:槐荫区 370105:天桥区")
    + _regions("山东省", "青岛市", "370202:市南区 370203:市北区 370211:黄岛区 370212:崂山区")
    + _regions("湖南省", "长沙市", "430102:芙蓉区 430103:天心区 430104:岳麓区 430105:开福区")
    + _regions("河南省", "郑州市", "410102:中原区 410103:二七区 410105:金水区")
    + _regions("辽宁省", "沈阳市", "210102:和平区 210103:沈河区 210104:大东区 210105:皇姑区")
    + _regions("辽宁省", "大连市", "210202:中山区 210203:西岗区 210204:沙河口区")
    + _regions("福建省", "厦门市", "350203:思明区 350205:海沧区 350206:湖里区")
    + _regions("福建省", "福州市", "350102:鼓楼区 350103:台江区 350104:仓山区")
    + _regions("安徽省", "合肥市", "340102:瑶海区 340103:庐阳区 340104:蜀山区 340111:包河区")
    + _regions("云南省", "昆明市", "530102:五华区 530103:盘龙区")
    + _regions("黑龙江省", "哈尔滨市", "230102:道里区 230103:南岗区")
    + _regions("吉林省", "长春市", "220102:南关区 220104:朝阳区")
    + _regions("河北省", "石家庄市", "130102:长安区 130104:桥西区")
    + _regions("山西省", "太原市", "140105:小店区 140106:迎泽区")
    + _regions("江西省", "南昌市", "360102:东湖区 360103:西湖区")
    + _regions("广西壮族自治区", "南宁市", "450102:兴宁区 450103:青秀区")
)


def _typo_regions() -> dict[str, str]:
    """For each district code a sibling code of the same city that no real customer uses.

    A mistyped ID card keeps its birth date and sequence but gets the sibling's code, so it
    looks valid, differs from the real one in a digit or two, and cannot collide with anyone.
    """
    used = {r.code for r in REGIONS}
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    for region in REGIONS:
        base = int(region.code)
        for delta in (1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 9, -9, 10, 20, 30):
            candidate = str(base + delta)
            same_city = candidate[:4] == region.code[:4] and candidate[4:] != "00"
            if same_city and candidate not in used and candidate not in taken:
                mapping[region.code] = candidate
                taken.add(candidate)
                break
        else:  # pragma: no cover - guarded by the test on the reference data
            raise ValueError(f"no typo sibling for {region.code}")
    return mapping


TYPO_REGION: dict[str, str] = _typo_regions()

STREETS: tuple[str, ...] = (
    "人民路",
    "解放路",
    "中山路",
    "建设路",
    "新华路",
    "和平路",
    "胜利路",
    "文化路",
    "光明路",
    "长江路",
    "黄河路",
    "学府路",
    "青年路",
    "朝阳路",
    "东风路",
    "幸福路",
    "迎宾大道",
    "滨江大道",
    "科技路",
    "工业大道",
    "南京路",
    "北京路",
    "复兴路",
    "振兴街",
)
ESTATES: tuple[str, ...] = (
    "阳光花园",
    "锦绣家园",
    "翠苑小区",
    "金色港湾",
    "世纪新城",
    "绿城花园",
    "华府小区",
    "书香苑",
    "康乐小区",
    "丽景湾",
)

EMAIL_DOMAINS: tuple[str, ...] = ("139.com", "qq.com", "163.com", "126.com", "sina.com")

# China Mobile number blocks (the first three digits of an MSISDN).
CHINA_MOBILE_PREFIXES: tuple[str, ...] = (
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "147",
    "150",
    "151",
    "152",
    "157",
    "158",
    "159",
    "172",
    "178",
    "182",
    "183",
    "184",
    "187",
    "188",
    "195",
    "197",
    "198",
    "165",
)

# Issuer prefixes of debit cards of the big Chinese banks (ICBC, ABC, CCB, CMB, BOC, BoCom).
BANK_BINS: tuple[str, ...] = ("622202", "622848", "621700", "621483", "621661", "622262")


class Offering(NamedTuple):
    offering_id: str
    name: str
    monthly_fee_cents: int
    data_mb: int
    voice_min: int
    sms: int
    sellable: bool


OFFERINGS: tuple[Offering, ...] = (
    Offering("OF0001", "神州行畅听卡18元（已停售）", 1800, 3072, 200, 50, False),
    Offering("OF0002", "动感地带芒果卡29元", 2900, 30720, 100, 50, True),
    Offering("OF0003", "动感地带潮玩卡39元", 3900, 40960, 200, 100, True),
    Offering("OF0004", "4G飞享套餐38元（已停售）", 3800, 10240, 100, 50, False),
    Offering("OF0005", "畅享套餐58元（已停售）", 5800, 20480, 300, 100, False),
    Offering("OF0006", "5G畅享套餐88元", 8800, 40960, 500, 100, True),
    Offering("OF0007", "5G智享套餐128元", 12800, 61440, 600, 200, True),
    Offering("OF0008", "和家庭融合套餐158元", 15800, 81920, 1000, 200, True),
    Offering("OF0009", "5G智享套餐198元", 19800, 102400, 1000, 300, True),
    Offering("OF0010", "5G智享套餐298元", 29800, 153600, 1500, 500, True),
    Offering("OF0011", "全球通尊享套餐388元", 38800, 204800, 2000, 500, True),
    Offering("OF0012", "全球通尊享套餐588元", 58800, 307200, 3000, 1000, True),
)
OFFERINGS_BY_ID: dict[str, Offering] = {o.offering_id: o for o in OFFERINGS}

# Offering draw weights (same order as OFFERINGS) by age band of the holder.
OFFERING_WEIGHTS_YOUNG = (1, 30, 30, 2, 3, 14, 10, 2, 5, 2, 1, 0)
OFFERING_WEIGHTS_ADULT = (4, 6, 8, 8, 10, 18, 16, 8, 10, 6, 4, 2)
OFFERING_WEIGHTS_SENIOR = (30, 1, 2, 20, 16, 12, 8, 4, 4, 1, 1, 1)

# Free text of care records. `{msisdn}`, `{cert}` and `{card}` are filled with the customer's own
# data in some records, as agents do in real notes; the hub has to mask them.
TICKET_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    (
        "fault",
        "移动数据无法上网",
        "客户反映近两天在家中无法使用移动数据，已指导重启手机并重置网络设置。",
    ),
    ("fault", "通话质量差", "客户反映通话时常断续，怀疑小区基站信号弱，已转网络优化组核查。"),
    ("fault", "号码无法接听来电", "客户来电称号码{msisdn}无法接听来电，主叫正常，已核查呼转设置。"),
    ("complaint", "话费扣费异常", "客户对上月账单中的增值业务扣费有异议，要求核实并退费。"),
    ("complaint", "套餐变更未生效", "客户称已办理套餐变更但本月仍按原套餐计费，要求解释。"),
    ("complaint", "营业厅服务态度", "客户投诉营业厅办理业务排队时间过长，工作人员态度冷淡。"),
    ("complaint", "自动扣款失败", "客户绑定的银行卡{card}自动扣款失败导致停机，要求尽快复机。"),
    ("inquiry", "咨询5G套餐", "客户咨询升级5G套餐的资费和合约期，已介绍当前可办理的套餐。"),
    ("inquiry", "国际漫游开通", "客户下月出国，咨询国际漫游开通方式和资费，已发送资费短信。"),
    ("inquiry", "实名信息核对", "客户提供身份证号{cert}要求核对实名登记信息，已核实一致。"),
    ("inquiry", "流量余量查询", "客户咨询本月剩余流量及超出后的计费标准，已告知查询方式。"),
)
INTERACTION_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("账单查询", "客户查询本月账单明细，已说明各项费用构成。"),
    ("套餐咨询", "客户咨询可办理的优惠套餐，已推荐合适档位。"),
    ("缴费提醒", "外呼提醒客户账户余额不足，请及时缴费。"),
    ("满意度回访", "回访客户上次服务的满意度，客户表示满意。"),
    ("故障报修", "客户报修家中宽带及手机信号问题，已登记工单。"),
    ("业务办理", "客户通过{msisdn}办理流量加油包，已成功订购。"),
    ("身份核验", "客户提供身份证{cert}办理补卡，核验通过。"),
    ("绑卡缴费", "客户要求绑定银行卡{card}用于自动缴费，已办理。"),
    ("营销推荐", "向客户推荐合约机优惠活动，客户表示考虑。"),
)
TICKET_CHANNELS: tuple[str, ...] = ("hotline", "app", "store", "web")
INTERACTION_CHANNELS: tuple[str, ...] = ("app", "web", "store", "agent", "ivr", "sms")
NOTE_TEXTS: tuple[str, ...] = (
    "已受理，转二线处理。",
    "已联系客户确认问题现象。",
    "问题已处理，待客户确认。",
    "客户确认问题已解决。",
    "已按规定退还相关费用。",
)
